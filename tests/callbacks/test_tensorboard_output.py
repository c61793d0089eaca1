"""GradFlowMonitor -> TensorBoard, read back with TensorBoard's own event reader."""

import numpy as np
import pytest
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_gradflow import GradFlowMonitor
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    logger = TensorBoardLogger(root, name="run", version=0)
    monitor = GradFlowMonitor(log_every_n_steps=2, histogram_every_n_steps=3, plot_every_n_steps=4)
    model = Regressor(mlp(depth=3))
    quiet_trainer(logger=logger, callbacks=[monitor], max_steps=8, log_every_n_steps=1).fit(
        model, regression_loader(n=128)
    )
    events = EventAccumulator(
        str(root / "run" / "version_0"), size_guidance={"histograms": 0, "images": 0, "scalars": 0}
    )
    events.Reload()
    return monitor, model, events


def test_scalar_tags_and_steps(tb_run):
    monitor, _, events = tb_run
    tags = set(events.Tags()["scalars"])
    names = [layer.name for layer in monitor.layers]
    assert names == ["net.0", "net.2", "net.4", "net.6"]
    for name in names:
        assert {f"grad_norm/{name}", f"weight_norm/{name}", f"update_ratio/{name}"} <= tags
    assert "grad_norm/total" in tags
    steps = [e.step for e in events.Scalars("grad_norm/total")]
    assert steps == [0, 2, 4, 6]
    values = [e.value for e in events.Scalars("grad_norm/net.0")]
    assert all(np.isfinite(values)) and all(v > 0 for v in values)


def test_total_is_the_norm_of_the_layer_norms(tb_run):
    monitor, _, events = tb_run
    layers = [
        np.array([e.value for e in events.Scalars(f"grad_norm/{layer.name}")])
        for layer in monitor.layers
    ]
    total = np.array([e.value for e in events.Scalars("grad_norm/total")])
    np.testing.assert_allclose(np.sqrt(sum(v**2 for v in layers)), total, rtol=1e-5)


def test_histogram_counts_sum_to_layer_element_count(tb_run):
    monitor, _, events = tb_run
    for layer in monitor.layers:
        hists = events.Histograms(f"grad_hist/{layer.name}")
        assert [h.step for h in hists] == [0, 3, 6]
        for h in hists:
            assert sum(h.histogram_value.bucket) == layer.numel
            assert h.histogram_value.num == layer.numel
            limits = list(h.histogram_value.bucket_limit)
            assert limits == monitor.histogram_bins.edges()[1:]


def test_gradient_flow_picture(tb_run):
    _, _, events = tb_run
    images = events.Images("grad_flow")
    assert [i.step for i in images] == [0, 4]
    assert images[0].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    assert images[0].width >= 600 and images[0].height >= 400
