"""End to end: train with the real GradFlowMonitor and TensorBoardLogger, then build the report.

Needs the engine to write the dashboard contract's tags (``grad_log10_norm/<index>.<name>``,
``grad_flow/*``, ``grad_flow/picture``).
"""

from __future__ import annotations

import re
import warnings

import pytest
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn

from lightning_gradflow import GradFlowMonitor
from lightning_gradflow.report import build_report
from lightning_gradflow.report.runs import load_runs
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader

pytestmark = pytest.mark.slow


def _train(root, name, net):
    logger = TensorBoardLogger(root, name=name, version=0)
    monitor = GradFlowMonitor(log_every_n_steps=2, plot_every_n_steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deep net's alerts also go to the console
        trainer = quiet_trainer(
            logger=logger, callbacks=[monitor], max_steps=12, max_epochs=3, log_every_n_steps=1
        )
        trainer.fit(Regressor(net), regression_loader(n=128))


def test_report_of_a_deep_sigmoid_mlp_names_it_vanishing(tmp_path):
    _train(tmp_path, "deep_sigmoid", mlp(depth=12, act=nn.Sigmoid))
    _train(tmp_path, "shallow_tanh", mlp(depth=2, act=nn.Tanh))
    runs = {run.name: run for run in load_runs(tmp_path)}
    assert set(runs) == {"deep_sigmoid", "shallow_tanh"}
    deep = runs["deep_sigmoid"]
    assert len(deep.layers) == 13 and deep.layers[0].startswith("00.")  # depth order
    assert deep.picture is not None  # the picture at train end
    page = build_report(tmp_path).read_text()
    summary = re.search(r'<div class="summary".*?</div>', page, re.S).group(0)
    vanishing = summary.split("</ul>")[0]
    assert "Vanishing gradients: 1 of 2 runs" in vanishing
    assert ">deep_sigmoid</b>" in vanishing and "shallow_tanh" not in vanishing
    assert (tmp_path / "00_deep_sigmoid_heatmap.png").is_file()
    assert (tmp_path / "01_shallow_tanh_picture.png").is_file()
