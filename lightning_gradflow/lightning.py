"""GradFlowMonitor for the unified ``lightning`` package (``import lightning as L``).

The same callback as :class:`lightning_gradflow.GradFlowMonitor` (same settings, outputs and
alerts), built on ``lightning.pytorch``'s own ``Callback``, loggers and strategies, so its
TensorBoard and W&B loggers get histograms, pictures and alert text too.

Example:
    >>> import lightning as L
    >>> from lightning_gradflow.lightning import GradFlowMonitor
    >>> trainer = L.Trainer(callbacks=[GradFlowMonitor()], logger=False)
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.strategies import FSDPStrategy

from lightning_gradflow.callbacks.lightning_hooks import Framework, GradFlowHooks
from lightning_gradflow.core.sinks import GradFlowWarning

__all__ = ["GradFlowMonitor", "GradFlowWarning"]


class GradFlowMonitor(GradFlowHooks, Callback):
    """Gradient flow and its pathologies, for ``lightning.pytorch.Trainer``.

    Takes the settings of :class:`lightning_gradflow.GradFlowMonitor`, which documents each.
    """

    framework = Framework(TensorBoardLogger, WandbLogger, FSDPStrategy)
