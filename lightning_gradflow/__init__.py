"""lightning_gradflow: see gradient flow while you train, and be warned when it goes wrong.

Example:
    >>> from pytorch_lightning import Trainer
    >>> from lightning_gradflow import GradFlowMonitor
    >>> trainer = Trainer(callbacks=[GradFlowMonitor()], logger=False)
"""

from lightning_gradflow.callbacks.gradflow_monitor import GradFlowMonitor
from lightning_gradflow.core.alerting import AlertManager
from lightning_gradflow.core.alerts import ALERT_KINDS, Alert, AlertKind, GradientPathologyError
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
