"""The library imports and monitors without Hydra, TensorBoard, W&B or arch installed."""

import subprocess
import sys

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
from lightning_gradflow.volatility import VolatilityDataModule, build_model
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
build_model("lstm", input_dim=dm.num_features, window=dm.window)
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
