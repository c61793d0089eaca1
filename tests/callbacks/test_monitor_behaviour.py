"""GradFlowMonitor in real Trainer runs: accumulation, optimizers, odd parameters, bad input."""

import csv
import re
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from lightning_gradflow import (
    DetectorConfig,
    GradFlowMonitor,
    GradientCollector,
    LogBins,
    ProbeConfig,
)
from tests.helpers.lightning_models import (
    Regressor,
    StepCounter,
    mlp,
    quiet_trainer,
    regression_loader,
)


def _csv_rows(logger: CSVLogger) -> list[dict]:
    with open(f"{logger.log_dir}/metrics.csv") as f:
        return list(csv.DictReader(f))


def test_gradient_accumulation_gives_one_record_per_optimizer_step(tmp_path):
    monitor = StepCounter(log_every_n_steps=1)
    trainer = quiet_trainer(accumulate_grad_batches=4, max_epochs=1, callbacks=[monitor])
    trainer.fit(Regressor(mlp()), regression_loader(n=128, batch_size=8))  # 16 batches
    assert [r.step for r in monitor.records] == [0, 1, 2, 3]
    assert all(r.loss is not None and r.loss > 0 for r in monitor.records)


def test_scalars_reach_the_csv_logger_at_the_logging_interval(tmp_path):
    logger = CSVLogger(tmp_path)
    monitor = GradFlowMonitor(log_every_n_steps=3)
    quiet_trainer(logger=logger, callbacks=[monitor], max_steps=7).fit(
        Regressor(mlp(depth=2)), regression_loader(n=128, batch_size=8)
    )
    rows = [r for r in _csv_rows(logger) if r.get("grad_norm/total")]
    assert [int(r["step"]) for r in rows] == [0, 3, 6]  # 6 is also the last step
    assert all(-6 < float(r["grad_log10_norm/00.net.0"]) < 3 for r in rows)


def test_default_interval_follows_the_trainer():
    monitor = StepCounter()
    trainer = quiet_trainer(max_steps=5, log_every_n_steps=2, callbacks=[monitor])
    trainer.fit(Regressor(mlp()), regression_loader(n=128))
    assert monitor.engine.log_every == 2
    assert [r.step for r in monitor.records] == [0, 1, 2, 3, 4]  # every step reaches detectors
    assert [r.weight_norms is not None for r in monitor.records] == [True, False, True, False, True]


class TwoOptimizers(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.encoder = nn.Linear(8, 8)
        self.head = nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        opt_a, opt_b = self.optimizers()
        x, y = batch
        loss = nn.functional.mse_loss(self.head(torch.relu(self.encoder(x))), y)
        opt_a.zero_grad()
        opt_b.zero_grad()
        self.manual_backward(loss)
        opt_a.step()
        opt_b.step()

    def configure_optimizers(self):
        return (
            torch.optim.SGD(self.encoder.parameters(), lr=0.1),
            torch.optim.Adam(self.head.parameters(), lr=0.01),
        )


def test_several_optimizers_each_report_their_own_layers(tmp_path):
    logger = CSVLogger(tmp_path)
    monitor = StepCounter(log_every_n_steps=1)
    quiet_trainer(logger=logger, callbacks=[monitor], max_epochs=1).fit(
        TwoOptimizers(), regression_loader(n=32, batch_size=16)
    )
    assert [(r.optimizer_index, r.has_grad.tolist()) for r in monitor.records] == [
        (0, [True, False]),
        (1, [False, True]),
        (0, [True, False]),
        (1, [False, True]),
    ]
    header = set(_csv_rows(logger)[0])
    assert {"grad_norm/total_optimizer0", "grad_norm/total_optimizer1"} <= header


class FrozenAndUnused(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(8, 8).requires_grad_(False)
        self.used = nn.Linear(8, 1)
        self.unused = nn.Linear(8, 1)
        self.embedding = nn.Embedding(4, 8, sparse=True)

    def training_step(self, batch, batch_idx):
        x, y = batch
        h = self.frozen(x) + self.embedding(torch.zeros(len(x), dtype=torch.long))
        return nn.functional.mse_loss(self.used(h), y)

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)


def test_frozen_unused_and_sparse_parameters(tmp_path):
    monitor = StepCounter(log_every_n_steps=1, histogram_every_n_steps=1)
    quiet_trainer(logger=CSVLogger(tmp_path), callbacks=[monitor], max_steps=3).fit(
        FrozenAndUnused(), regression_loader()
    )
    names = [layer.name for layer in monitor.layers]
    assert names == ["frozen", "embedding", "used", "unused"]
    record = monitor.records[-1]
    assert record.has_grad.tolist() == [False, True, True, False]
    assert record.log_histograms[1].sum() == 4 * 8


def test_forward_order_through_the_trainer():
    class Backwards(Regressor):
        def __init__(self):
            super().__init__(nn.Identity())
            self.out = nn.Linear(4, 1)
            self.mid = nn.Linear(4, 4)
            self.inp = nn.Linear(8, 4)

        def forward(self, x):
            return self.out(torch.tanh(self.mid(torch.tanh(self.inp(x)))))

    monitor = GradFlowMonitor()
    quiet_trainer(callbacks=[monitor], max_steps=1).fit(Backwards(), regression_loader())
    assert [layer.name for layer in monitor.layers] == ["inp", "mid", "out"]


def test_nan_gradients_are_reported_not_raised(tmp_path):
    class Poisoned(Regressor):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if batch_idx == 1 else loss

    monitor = StepCounter(log_every_n_steps=1)
    quiet_trainer(logger=CSVLogger(tmp_path), callbacks=[monitor], max_steps=3).fit(
        Poisoned(mlp(depth=2)), regression_loader()
    )
    assert len(monitor.records[1].nonfinite_layers) == 3
    assert monitor.records[1].loss != monitor.records[1].loss  # NaN loss recorded as NaN
    summary = monitor.gradient_summary()
    bad = [r.step for r in monitor.records if len(r.nonfinite_layers)]
    assert bad == [1, 2]  # the NaN step's update corrupts the weights for the next step
    assert summary["nonfinite_grad_steps"] == 2
    assert summary["grad_norm_max"] == monitor.records[0].total_norm


def test_no_logger_warns_once_and_keeps_computing():
    monitor = StepCounter(log_every_n_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(callbacks=[monitor], max_steps=4, logger=False).fit(
            Regressor(mlp()), regression_loader()
        )
    messages = [str(w.message) for w in caught if "GradFlowMonitor" in str(w.message)]
    assert len(messages) == 1 and "no logger" in messages[0]
    assert len(monitor.records) == 4


def test_bf16_mixed_precision_on_cpu():
    monitor = StepCounter(log_every_n_steps=1)
    quiet_trainer(callbacks=[monitor], max_steps=2, precision="bf16-mixed").fit(
        Regressor(mlp()), regression_loader()
    )
    assert all(r.nonfinite_layers.size == 0 and r.total_norm > 0 for r in monitor.records)


class ComplexMixer(nn.Module):
    """A complex ``features x features`` matrix; passes on the magnitudes of its outputs."""

    def __init__(self, dtype: torch.dtype, features: int = 8) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(features, features, dtype=dtype) / features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.weight.dtype) @ self.weight).abs().to(x.dtype)


class ReferenceNorms(pl.Callback):
    """Per-layer gradient and weight norms of every optimizer step, by ``vector_norm``."""

    def __init__(self, monitor: GradFlowMonitor) -> None:
        self.monitor = monitor
        self.grads: list[list[float]] = []
        self.weights: list[list[float]] = []

    @staticmethod
    def _norm(tensors: list[torch.Tensor]) -> float:
        norms = torch.stack([torch.linalg.vector_norm(t) for t in tensors])
        return torch.linalg.vector_norm(norms).item()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        layers = self.monitor.layers
        self.grads.append([self._norm([p.grad for p in layer.params]) for layer in layers])
        self.weights.append([self._norm(list(layer.params)) for layer in layers])


@pytest.mark.parametrize(
    ("precision", "complex_dtype", "dtypes", "rel"),
    [
        ("64-true", torch.complex128, {torch.complex128, torch.float64}, 1e-12),
        ("32-true", torch.complex64, {torch.complex64, torch.float32}, 1e-6),
    ],
)
def test_float64_and_complex_parameters(precision, complex_dtype, dtypes, rel):
    monitor = StepCounter(log_every_n_steps=1, histogram_every_n_steps=1, linear_histogram_bins=6)
    reference = ReferenceNorms(monitor)
    model = Regressor(nn.Sequential(ComplexMixer(complex_dtype), nn.Tanh(), mlp(depth=1)))
    quiet_trainer(callbacks=[monitor, reference], max_steps=3, precision=precision).fit(
        model, regression_loader()
    )
    assert {p.dtype for p in model.parameters()} == dtypes
    assert [layer.name for layer in monitor.layers] == ["net.0", "net.2.0", "net.2.2"]
    assert len(monitor.records) == 3
    for record, grads, weights in zip(
        monitor.records, reference.grads, reference.weights, strict=True
    ):
        assert record.layer_norms.tolist() == pytest.approx(grads, rel=rel)
        assert record.weight_norms.tolist() == pytest.approx(weights, rel=rel)
        assert all(0 < ratio < 1 for ratio in record.update_ratios)
        numels = [layer.numel for layer in monitor.layers]
        assert record.log_histograms.sum(axis=1).tolist() == numels
        counts, _ = record.linear_histograms
        assert counts.sum(axis=1).tolist() == numels
        assert counts[0, :3].sum() == 0  # complex values are binned by magnitude: all >= 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"log_every_n_steps": 0}, "log_every_n_steps=0 is not allowed"),
        ({"histogram_every_n_steps": -5}, "histogram_every_n_steps=-5"),
        ({"plot_every_n_steps": 2.5}, "plot_every_n_steps=2.5"),
        ({"histogram_every_n_steps": True}, "histogram_every_n_steps=True"),
        (
            {"plot_every_n_steps": "often"},
            "plot_every_n_steps='often' is not allowed: expected a positive integer, \"auto\"",
        ),
        (
            {"flow_log10_range": (2, -12)},
            "flow_log10_range=(2, -12) is not allowed: expected None or two",
        ),
        ({"flow_log10_range": (-12,)}, "flow_log10_range=(-12,) is not allowed"),
        ({"flow_log10_range": "(-12, 2)"}, "flow_log10_range='(-12, 2)' is not allowed"),
        ({"flow_log10_range": (-12, float("inf"))}, "flow_log10_range=(-12, inf) is not allowed"),
        ({"flow_log10_range": (-12, True)}, "flow_log10_range=(-12, True) is not allowed"),
        ({"granularity": "param"}, "granularity='param' is not allowed: expected one of"),
        ({"granularity": ["layer"]}, "granularity=['layer'] is not allowed: expected one of"),
        ({"linear_histogram_bins": 0}, "linear_histogram_bins=0"),
        ({"linear_histogram_bins": 2.5}, "linear_histogram_bins=2.5"),
        ({"log_weight_norms": "no"}, "log_weight_norms='no' is not allowed: expected True or"),
        ({"log_update_ratios": None}, "log_update_ratios=None is not allowed: expected True or"),
        ({"sharded": 1}, "sharded=1 is not allowed: expected True, False or None"),
        ({"disable": None}, "disable=None is not allowed: expected a list of alert kinds"),
        ({"disable": "vanishing"}, "disable='vanishing' is not allowed: expected a list of"),
        ({"disable": [["vanishing"]]}, "disable=[['vanishing']] holds unknown alert kinds"),
        ({"actions": "raise"}, "actions='raise' is not allowed: expected a mapping of alert"),
        (
            {"histogram_bins": "decade"},
            "histogram_bins='decade' is not allowed: expected a LogBins",
        ),
        ({"histogram_bins": {"per_decade": 2.5}}, "histogram_bins.per_decade=2.5 is not allowed"),
        ({"histogram_bins": {"high_exp": float("inf")}}, "histogram_bins.high_exp=inf is not"),
        ({"probes": {"patience": 0}}, "probes.patience=0 is not allowed: expected a positive"),
        ({"probes": [("patience", 5)]}, "probes=[('patience', 5)] is not allowed: expected a"),
        ({"detectors": {"spike_factor": float("nan")}}, "detectors.spike_factor=nan is not"),
        ({"detectors": 5}, "detectors=5 is not allowed: expected a DetectorConfig, a mapping"),
        (
            {"detectors": {"patience": 5, "windw": 10}},
            "detectors={'patience': 5, 'windw': 10} is not allowed: expected a DetectorConfig or "
            "a mapping of its fields; unknown: ['windw'], allowed: ['vanishing_floor', ",
        ),
    ],
)
def test_invalid_settings_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        GradFlowMonitor(**kwargs)


def test_a_fixed_log10_range_from_a_list_as_hydra_gives_it():
    assert GradFlowMonitor(flow_log10_range=[-12, 2]).flow_log10_range == (-12.0, 2.0)
    assert GradFlowMonitor().histogram_every_n_steps == "auto"


def test_configs_from_mappings_and_disable_from_a_generator():
    monitor = GradFlowMonitor(
        histogram_bins={"low_exp": -8, "per_decade": 2},
        detectors={"patience": 5, "spike_factor": 20},
        probes={"patience": 4},
        disable=(kind for kind in ["vanishing", "dead_relu"]),
    )
    assert monitor.histogram_bins == LogBins(low_exp=-8, per_decade=2)
    assert monitor.detector_config == DetectorConfig(patience=5, spike_factor=20)
    assert monitor.probe_config == ProbeConfig(patience=4)
    kinds = monitor.engine.detector_kinds
    assert kinds[:4] == ["exploding", "nonfinite", "always_clipping", "loss_spike"]
    assert "dead_relu" not in kinds and "saturation" in kinds


def test_public_api_exports():
    import lightning_gradflow

    assert lightning_gradflow.GradFlowMonitor is GradFlowMonitor
    assert lightning_gradflow.GradientCollector is GradientCollector
