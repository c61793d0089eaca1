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


def _values(events, tag):
    return np.array([e.value for e in events.Scalars(tag)])


def test_scalar_tags_keep_depth_order_and_the_last_step(tb_run):
    monitor, _, events = tb_run
    tags = set(events.Tags()["scalars"])
    assert [layer.name for layer in monitor.layers] == ["net.0", "net.2", "net.4", "net.6"]
    assert monitor.layer_tags == ["00.net.0", "01.net.2", "02.net.4", "03.net.6"]
    per_layer = sorted(t for t in tags if t.startswith("grad_log10_norm/"))
    assert per_layer == [f"grad_log10_norm/{tag}" for tag in monitor.layer_tags]  # text = depth
    for tag in monitor.layer_tags:
        assert {f"weight_norm/{tag}", f"update_ratio_log10/{tag}"} <= tags
    # every log_every_n_steps=2, and the run's last step (max_steps=8)
    assert [e.step for e in events.Scalars("grad_norm/total")] == [0, 2, 4, 6, 7]
    assert all(np.isfinite(_values(events, "grad_log10_norm/00.net.0")))


def test_total_is_the_norm_of_the_layer_norms(tb_run):
    monitor, _, events = tb_run
    layers = [10 ** _values(events, f"grad_log10_norm/{tag}") for tag in monitor.layer_tags]
    total = _values(events, "grad_norm/total")
    np.testing.assert_allclose(np.sqrt(sum(v**2 for v in layers)), total, rtol=1e-4)


def test_depth_summaries_describe_the_logged_layer_norms(tb_run):
    monitor, _, events = tb_run
    logs = np.stack([_values(events, f"grad_log10_norm/{tag}") for tag in monitor.layer_tags])
    slope = np.polyfit(np.arange(len(logs)), logs, 1)[0]  # one fit per logged step
    np.testing.assert_allclose(_values(events, "grad_flow/gamma"), 10**-slope, rtol=1e-4)
    ratio = _values(events, "grad_flow/log10_first_last_ratio")
    np.testing.assert_allclose(ratio, logs[0] - logs[-1], atol=1e-4)
    np.testing.assert_allclose(_values(events, "grad_flow/first_last_ratio"), 10**ratio, rtol=1e-4)
    np.testing.assert_allclose(_values(events, "grad_flow/min_log10_norm"), logs.min(0), atol=1e-5)
    np.testing.assert_allclose(_values(events, "grad_flow/max_log10_norm"), logs.max(0), atol=1e-5)
    dead = (10**logs < monitor.detector_config.vanishing_floor).sum(0)
    np.testing.assert_array_equal(_values(events, "grad_flow/dead_layers"), dead)


def test_histogram_counts_sum_to_layer_element_count(tb_run):
    monitor, _, events = tb_run
    for layer, tag in zip(monitor.layers, monitor.layer_tags, strict=True):
        hists = events.Histograms(f"grad_log10_hist/{tag}")
        assert [h.step for h in hists] == [0, 3, 6, 7]  # and the trained network at the end
        for h in hists:
            assert sum(h.histogram_value.bucket) == layer.numel
            assert h.histogram_value.num == layer.numel
            limits = list(h.histogram_value.bucket_limit)
            assert limits == monitor.histogram_bins.edges()[1:]


def test_gradient_flow_picture(tb_run):
    _, _, events = tb_run
    images = events.Images("grad_flow/picture")
    assert [i.step for i in images] == [0, 4, 7]
    assert images[0].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    assert images[0].width >= 600 and images[0].height >= 400


def test_heatmap_is_refreshed_with_the_picture(tb_run):
    _, _, events = tb_run
    heatmaps = events.Images("grad_flow/heatmap")
    assert [i.step for i in heatmaps] == [0, 4, 7]
    assert heatmaps[-1].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"


def test_custom_scalars_layout_is_written_at_the_start(tb_run):
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    _, _, events = tb_run
    [layout_event] = events.Tensors(metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout.FromString(layout_event.tensor_proto.string_val[0])
    assert layout_event.step == 0
    charts = {
        (category.title, chart.title): list(chart.multiline.tag)
        for category in layout.category
        for chart in category.chart
    }
    [per_layer] = [tags for (cat, _), tags in charts.items() if "grad_log10_norm/.*" in tags]
    assert per_layer == ["grad_log10_norm/.*"]
    assert {cat for cat, _ in charts} == {"gradient flow", "alerts"}
    assert any("gamma" in tag for tags in charts.values() for tag in tags)
