"""The library imports and monitors without Hydra, TensorBoard, W&B or arch installed."""

import subprocess
import sys

import pytest

from tests.helpers.subprocess_runs import ROOT

BLOCKED = ("hydra", "omegaconf", "tensorboard", "tensorboardX", "wandb", "arch")

SCRIPT = f"""
import sys

class NotInstalled:
    # a finder that makes the blocked packages look uninstalled, to find_spec and import alike
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
import csv, tempfile, warnings
from pytorch_lightning.loggers import CSVLogger
import lightning_gradflow
from lightning_gradflow import GradFlowMonitor
from recipes.volatility import LSTM, VolatilityDataModule
from tests.helpers.lightning_models import Regressor, mlp, quiet_trainer, regression_loader
root = tempfile.mkdtemp()
monitor = GradFlowMonitor(log_every_n_steps=1, plot_every_n_steps=1, histogram_every_n_steps=1)
logger = CSVLogger(root, name="csv", version=0)
quiet_trainer(callbacks=[monitor], logger=logger, max_steps=3, default_root_dir=root).fit(
    Regressor(mlp()), regression_loader())
rows = list(csv.DictReader(open(logger.log_dir + "/metrics.csv")))
assert sum(bool(r.get("grad_norm/total")) for r in rows) == 3, rows
dm = VolatilityDataModule("garch_sim", sim_days=2500)
dm.setup("fit")
LSTM(input_dim=dm.num_features)
try:
    VolatilityDataModule("sp500").setup("fit")
except ImportError as error:
    assert "lightning-gradflow[recipes]" in str(error), error
else:
    raise AssertionError("sp500 loaded without arch")
print("ok")
"""


def test_core_paths_work_with_optional_dependencies_blocked():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


CORE_SCRIPT = """
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
import json, tempfile
import torch
from torch import nn
import lightning_gradflow
import lightning_gradflow.core
from lightning_gradflow.engine import GradFlowEngine
from lightning_gradflow.loop import GradFlow
import lightning_gradflow.report
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
log_dir = tempfile.mkdtemp()
with GradFlow(model, log_dir=log_dir, log_every_n_steps=1, plot_every_n_steps=1) as monitor:
    for step in range(4):
        x = torch.randn(8, 4)
        if step == 2:
            x[0, 0] = float("nan")
        loss = model(x).pow(2).mean()
        loss.backward()
        monitor.step(optimizer, loss)
        optimizer.zero_grad()
[line] = open(log_dir + "/gradflow_alerts.jsonl").read().splitlines()
assert json.loads(line)["step"] == 2, line
try:
    lightning_gradflow.GradFlowMonitor
except ModuleNotFoundError as error:
    assert "pytorch_lightning" in str(error), error
else:
    raise AssertionError("GradFlowMonitor imported without pytorch_lightning")
print(sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r}))
"""


def test_core_engine_and_plain_loop_need_no_framework_or_backend():
    blocked = (*BLOCKED, "pytorch_lightning", "lightning", "lightning_fabric", "matplotlib")
    proc = subprocess.run(
        [sys.executable, "-c", CORE_SCRIPT.format(blocked=blocked)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("[]")  # nothing of them was imported


REPORT_SCRIPT = """
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
import tempfile
from lightning_gradflow.report import build_report
try:
    build_report(tempfile.mkdtemp())
except ImportError as error:
    print(error)
else:
    raise AssertionError("a report was built without {blocked}")
"""


@pytest.mark.parametrize("blocked", ["tensorboard", "matplotlib"])
def test_the_report_imports_without_its_extra_and_names_it_when_used(blocked):
    proc = subprocess.run(
        [sys.executable, "-c", REPORT_SCRIPT.format(blocked=blocked)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == (
        f"the gradient-flow report needs {blocked!r}; install it with "
        'pip install "lightning-gradflow[tensorboard]"'
    )
