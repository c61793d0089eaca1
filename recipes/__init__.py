"""Hydra recipes: train, compare and stress-test the forecasting networks with GradFlowMonitor.

The forecasting application lives here, not in the plugin's wheel: :mod:`recipes.volatility`
(data, models, the Lightning forecaster, baselines, metrics, significance tests) imports
without Hydra; :mod:`recipes.resolvers` registers the OmegaConf resolvers the configs in
``conf/`` use (the entry points import it), so compose the configs after
``import recipes.resolvers``.
"""
