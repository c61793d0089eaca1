"""Lightning's W&B logger, quiet: ``conf/logger/wandb.yaml`` builds this one.

``pytorch_lightning.loggers.WandbLogger`` always hands ``anonymous`` to ``wandb.init``, and
wandb >= 0.19 prints a deprecation warning for any value of it, ``None`` included, before the
run's ``silent`` setting applies. This subclass leaves the argument out; nothing else changes.

Example:
    >>> logger = WandbLogger(project="demo", offline=True)
    >>> "anonymous" in logger._wandb_init
    False
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning.loggers import WandbLogger as _LightningWandbLogger


class WandbLogger(_LightningWandbLogger):
    """``pytorch_lightning.loggers.WandbLogger`` without the deprecated ``anonymous``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)
