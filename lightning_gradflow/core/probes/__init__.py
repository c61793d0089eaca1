"""Activation probes: pathologies that gradient norms cannot explain, seen in the forward pass.

==========================  ============================================================
alert kind                  measured on
==========================  ============================================================
``dead_relu``               ``nn.ReLU``/``nn.ReLU6``: share of units zero on every row (units:
                            channels after a conv/norm/pooling layer, else the last dim)
``saturation``              ``nn.Sigmoid``/``nn.Tanh``: share of outputs in the flat tails
``attention_collapse``      ``nn.MultiheadAttention``: normalised entropy of every head
``rank_collapse``           ``nn.TransformerEncoderLayer``/``DecoderLayer``: effective rank
==========================  ============================================================

Your own modules opt in with ``gradflow_probe = "relu" | "sigmoid" | "tanh" | "attention" |
"block"`` or :func:`register_probe` (see :mod:`~lightning_gradflow.core.probes.registry`).

Probes cost nothing outside probe steps: forward hooks are attached for one forward pass and
removed afterwards. The hooks keep their results on the device; :meth:`ActivationProbes.collect`
copies them in one transfer, and :class:`ProbeDetectors` turns them into the same
:class:`~lightning_gradflow.core.alerts.Alert` the gradient detectors emit. Probe in training
mode. (In eval mode PyTorch turns its transformer-layer fast path off while hooks are attached,
so probes still see the attention; but ``nn.TransformerEncoder`` with a padding mask then
passes nested tensors between layers, which are skipped.)

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 1))
    >>> probes, detectors = ActivationProbes(model), ProbeDetectors()
    >>> with probes.attached():
    ...     _ = model(torch.randn(32, 4))
    >>> stats = probes.collect()
    >>> detectors.update(step=0, epoch=0, stats=stats)
    []
    >>> list(stats.scalars())
    ['probe/dead_relu/1']
"""

from typing import Any

from lightning_gradflow.core.detector import alert_kinds, import_submodules
from lightning_gradflow.core.probes.config import ProbeConfig
from lightning_gradflow.core.probes.detectors import ProbeDetector, ProbeDetectors
from lightning_gradflow.core.probes.probe import ActivationProbes, ProbeStats
from lightning_gradflow.core.probes.registry import (
    PROBE_KINDS,
    ProbeKind,
    discover_probes,
    register_probe,
)


def __getattr__(name: str) -> Any:
    """``PROBE_ALERT_KINDS``: the registered probe detectors' kinds, read when asked for."""
    if name == "PROBE_ALERT_KINDS":
        return alert_kinds("probe")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


import_submodules(__name__, __path__)  # every probe detector defined here registers its class

__all__ = [
    "PROBE_ALERT_KINDS",
    "PROBE_KINDS",
    "ActivationProbes",
    "ProbeConfig",
    "ProbeDetector",
    "ProbeDetectors",
    "ProbeKind",
    "ProbeStats",
    "discover_probes",
    "register_probe",
]
