"""``torch.compile``d models: the same layers, norms and probe statistics as in eager mode.

``aot_eager`` runs Dynamo's tracing and AOTAutograd (where module hooks and the ``_orig_mod``
wrapper matter) without generating C++ code, so the test stays fast.
"""

import numpy as np
import pytest
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch._dynamo.utils import counters

from lightning_gradflow import GradFlowMonitor
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader


def _fit(tmp_path, compiled: str | None):
    torch.manual_seed(0)
    net = mlp(depth=3, act=nn.ReLU)
    model = Regressor(torch.compile(net, backend="aot_eager") if compiled == "net" else net)
    if compiled == "module":
        model = torch.compile(model, backend="aot_eager")
    monitor = GradFlowMonitor(log_every_n_steps=1, probe_every_n_steps=2)
    logger = CSVLogger(tmp_path, name=str(compiled), version=0)
    quiet_trainer(callbacks=[monitor], logger=logger, max_steps=6).fit(
        model, regression_loader(n=256, batch_size=16)
    )
    return monitor, _columns(tmp_path / str(compiled) / "version_0" / "metrics.csv")


def _columns(path) -> dict[str, np.ndarray]:
    header, *rows = [line.split(",") for line in path.read_text().splitlines()]
    table = np.array([[float(v) if v else np.nan for v in row] for row in rows])
    return {name: table[:, i] for i, name in enumerate(header)}


@pytest.mark.parametrize("compiled", ["net", "module"])
def test_compiled_model_reports_what_eager_reports(tmp_path, compiled):
    """Hooked forward passes (layer order at step 0, probes at 0, 2, 4) run eagerly; the rest
    run the one compiled graph, never recompiled."""
    eager, eager_cols = _fit(tmp_path, None)
    torch._dynamo.reset()
    counters.clear()
    monitor, cols = _fit(tmp_path, compiled)
    assert counters["stats"]["unique_graphs"] == 1
    assert [layer.name for layer in monitor.layers] == ["net.0", "net.2", "net.4", "net.6"]
    prefixes = ("grad_log10_norm/", "probe/", "update_ratio_log10/")
    tags = [t for t in eager_cols if t.startswith(prefixes)]
    assert "probe/dead_relu/net.1" in tags and "grad_log10_norm/00.net.0" in tags
    for tag in tags:
        np.testing.assert_allclose(cols[tag], eager_cols[tag], rtol=1e-4, err_msg=tag)
    assert monitor.alert_counts == eager.alert_counts == {}
