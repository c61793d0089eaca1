"""Lightning adapters: the only code in the package that imports Lightning."""

from lightning_gradflow.callbacks.gradflow_monitor import GradFlowMonitor

__all__ = ["GradFlowMonitor"]
