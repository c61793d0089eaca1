"""lightning_gradflow: see gradient flow while you train, and be warned when it goes wrong.

Example:
    >>> from pytorch_lightning import Trainer
    >>> from lightning_gradflow import GradFlowMonitor
    >>> trainer = Trainer(callbacks=[GradFlowMonitor()], logger=False)
"""

from lightning_gradflow.callbacks.gradflow_monitor import GradFlowMonitor
from lightning_gradflow.core.collector import GradientCollector, StepRecord
from lightning_gradflow.core.flow import DepthFit, fit_depth_profile
from lightning_gradflow.core.histograms import LogBins
from lightning_gradflow.core.layers import ForwardOrderRecorder, Layer, group_parameters

__all__ = [
    "DepthFit",
    "ForwardOrderRecorder",
    "GradFlowMonitor",
    "GradientCollector",
    "Layer",
    "LogBins",
    "StepRecord",
    "fit_depth_profile",
    "group_parameters",
]
__version__ = "0.1.0"
