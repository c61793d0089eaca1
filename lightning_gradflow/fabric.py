"""GradFlow in a Lightning Fabric loop: Fabric's loggers, ranks and reductions.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from lightning.fabric import Fabric
    >>> fabric = Fabric(accelerator="cpu", devices=1, loggers=[])
    >>> net = nn.Linear(4, 1)
    >>> model, optimizer = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=0.1))
    >>> monitor = FabricGradFlow(fabric, model, log_every_n_steps=1)
    >>> loss = model(torch.randn(8, 4)).pow(2).mean()
    >>> fabric.backward(loss)
    >>> monitor.step(optimizer, loss)
    False
    >>> monitor.close()
"""

from __future__ import annotations

from typing import Any

from lightning.fabric import Fabric
from lightning.fabric.loggers import TensorBoardLogger
from lightning.fabric.strategies import FSDPStrategy
from torch import nn

from lightning_gradflow.core.sinks import Sink
from lightning_gradflow.engine import RunContext
from lightning_gradflow.loop import GradFlow
from lightning_gradflow.writers.logger import LoggerScalars


class FabricGradFlow(GradFlow):
    """:class:`~lightning_gradflow.loop.GradFlow` wired to a ``Fabric``.

    Scalars go to every ``fabric.loggers`` entry; a TensorBoard logger also gets histograms,
    the picture and alert text, and the alerts file goes to its directory. Outputs happen on
    global rank zero; stop and raise are decided on every rank together.

    Args:
        fabric: the launched ``Fabric``.
        model: the model, as ``fabric.setup`` returned it (or the plain module).
        **settings: those of :class:`lightning_gradflow.GradFlowMonitor`.
    """

    def __init__(self, fabric: Fabric, model: nn.Module, **settings: Any) -> None:
        from lightning_gradflow.writers.tensorboard_writer import TensorBoardWriter

        sinks: list[Sink] = []
        log_dir = None
        for logger in fabric.loggers if fabric.is_global_zero else ():
            if isinstance(logger, TensorBoardLogger):  # its scalars too, one event a step
                sinks.append(TensorBoardWriter.for_logger(logger))
                log_dir = log_dir or logger.log_dir
            else:
                sinks.append(LoggerScalars(logger))  # Fabric's loggers write the scalars
        strategy = fabric.strategy
        run = RunContext(
            sinks=sinks,
            is_rank_zero=fabric.is_global_zero,
            world_size=fabric.world_size,
            reduce_any=lambda flag: strategy.reduce_boolean_decision(flag, all=False),
            sharded=isinstance(strategy, FSDPStrategy),
        )
        module = getattr(model, "module", model)  # fabric.setup's wrapper holds the module
        super().__init__(module, log_dir=log_dir, run=run, **settings)
