"""Hydra recipes: train, compare and stress-test the forecasting networks with GradFlowMonitor.

Importing the package registers the OmegaConf resolvers the configs in ``conf/`` use
(:mod:`recipes.resolvers`), so compose the configs after ``import recipes``.
"""

from recipes import resolvers as resolvers

CONFIG_DIR = resolvers.CONFIG_DIR

__all__ = ["CONFIG_DIR", "resolvers"]
