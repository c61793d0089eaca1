"""lightning_gradflow: see gradient flow while you train, and be warned when it goes wrong.

Pick the adapter for your loop; the core imports no framework:

- ``pytorch_lightning``: ``from lightning_gradflow import GradFlowMonitor``
- ``lightning`` (``import lightning as L``): ``from lightning_gradflow.lightning import
  GradFlowMonitor``
- Lightning Fabric: ``from lightning_gradflow.fabric import FabricGradFlow``
- a plain PyTorch loop: ``from lightning_gradflow.loop import GradFlow``

``GradFlowMonitor`` is imported on first use, so ``import lightning_gradflow.core`` (or the
engine, or the plain-loop adapter) never imports Lightning.

Example:
    >>> from pytorch_lightning import Trainer
    >>> from lightning_gradflow import GradFlowMonitor
    >>> trainer = Trainer(callbacks=[GradFlowMonitor()], logger=False)
"""

from typing import Any

from lightning_gradflow.core.alerting import AlertManager
from lightning_gradflow.core.alerts import Alert, GradientPathologyError
from lightning_gradflow.core.collector import GradientCollector, StepRecord
from lightning_gradflow.core.detectors import DetectorConfig, GradientDetectors
from lightning_gradflow.core.flow import DepthFit, fit_depth_profile
from lightning_gradflow.core.histograms import LogBins
from lightning_gradflow.core.layers import ForwardOrderRecorder, Layer, group_parameters
from lightning_gradflow.core.probes import ActivationProbes, ProbeConfig, register_probe
from lightning_gradflow.core.sinks import GradFlowWarning, Sink

__all__ = [
    "ALERT_KINDS",
    "ActivationProbes",
    "Alert",
    "AlertKind",
    "AlertManager",
    "DepthFit",
    "DetectorConfig",
    "ForwardOrderRecorder",
    "GradFlowMonitor",
    "GradFlowWarning",
    "GradientCollector",
    "GradientDetectors",
    "GradientPathologyError",
    "Layer",
    "LogBins",
    "ProbeConfig",
    "Sink",
    "StepRecord",
    "fit_depth_profile",
    "group_parameters",
    "register_probe",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("ALERT_KINDS", "AlertKind"):  # derived from the detector registry when read
        from lightning_gradflow.core import alerts

        return getattr(alerts, name)
    if name == "GradFlowMonitor":  # imports pytorch_lightning: only when asked for
        from lightning_gradflow.callbacks.gradflow_monitor import GradFlowMonitor

        return GradFlowMonitor
    raise AttributeError(f"module 'lightning_gradflow' has no attribute {name!r}")
