"""What a recipe run shows in TensorBoard and W&B besides the monitor's curves.

- :func:`curated_hparams`: the hyperparameters a sweep varies (model, depth, width, lr, ...),
  flat, for the TensorBoard HParams table.
- :func:`final_metrics`: the run's results under ``hparams/*`` (test QLIKE, ratio to HAR,
  first/last gradient ratio, γ, alerts announced, ...).
- :func:`log_final`: both, after testing: an HParams session on every ``TensorBoardLogger``
  (``log_hyperparams(params, metrics)``) and the metrics in every W&B run summary.
- :func:`config_markdown`: the resolved run config as TensorBoard text (W&B gets it as the
  run config, see :class:`recipes.callbacks.RunSummary`).

Example:
    >>> config = {"model": {"net": {"_target_": "x.MLP", "depth": 20, "input_dim": 3},
    ...     "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.001}, "loss": "mse"}}
    >>> curated_hparams(config, model="mlp_vanilla", run="model.net.depth=20")
    {'run': 'model.net.depth=20', 'model': 'mlp_vanilla', 'depth': 20, 'optimizer': 'Adam', \
'lr': 0.001, 'scheduler': 'none', 'loss': 'mse', 'seed': 'none'}
    >>> final_metrics({"test": {"qlike": 0.5}, "alerts_announced": {"vanishing": 2, "exploding": 1},
    ...     "gradient": {"first_last_ratio": 1e-8, "gamma": 0.4}})
    {'hparams/test_qlike': 0.5, 'hparams/first_last_ratio': 1e-08, \
'hparams/log10_first_last_ratio': -8.0, 'hparams/gamma': 0.4, 'hparams/alerts_announced': 3.0}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

_OPTIMIZER = ("lr", "weight_decay", "momentum")
_DATA = ("source", "window", "horizon", "batch_size", "target")
_TRAINER = ("max_epochs", "precision", "gradient_clip_val", "accumulate_grad_batches")
_NET_SKIP = ("_target_", "input_dim", "window")  # the data decides these


def _name(node: Any) -> str | None:
    """``{_target_: torch.optim.Adam, ...}`` -> ``Adam``; no node -> ``None``."""
    return str(node["_target_"]).rsplit(".", 1)[-1] if isinstance(node, Mapping) else None


def _pick(node: Any, keys: Iterable[str]) -> dict[str, Any]:
    return {k: node[k] for k in keys if k in node} if isinstance(node, Mapping) else {}


def _scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float | str)


def curated_hparams(config: Mapping[str, Any], model: str, run: str) -> dict[str, Any]:
    """Flat hyperparameters of a resolved recipe config: run name, model, every scalar of the
    network (depth, width, activation, norm, hidden, ...), optimizer and its lr, scheduler,
    loss, data (source, window, horizon, batch size, target), trainer (max_epochs, precision,
    clipping, accumulation) and seed. ``None`` becomes ``"none"`` (TensorBoard takes numbers,
    strings and booleans); non-scalar values are left out."""
    forecaster = config.get("model") or {}
    params = {
        "run": run,
        "model": model,
        **{k: v for k, v in (forecaster.get("net") or {}).items() if k not in _NET_SKIP},
        "optimizer": _name(forecaster.get("optimizer")),
        **_pick(forecaster.get("optimizer"), _OPTIMIZER),
        "scheduler": _name(forecaster.get("scheduler")),
        "loss": forecaster.get("loss"),
        **_pick(config.get("data"), _DATA),
        **_pick(config.get("trainer"), _TRAINER),
        "seed": config.get("seed"),
    }
    return {k: "none" if v is None else v for k, v in params.items() if v is None or _scalar(v)}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The run's results (``metrics.json``) as ``hparams/*`` numbers; absent or non-finite
    values are left out."""
    test = metrics.get("test") or {}
    grad = metrics.get("gradient") or {}
    ratio = grad.get("first_last_ratio")
    values = {
        "test_qlike": test.get("qlike"),
        "qlike_ratio_har": test.get("qlike_ratio_har"),
        "qlike_ratio_lhar": test.get("qlike_ratio_lhar"),
        "first_last_ratio": ratio,
        "log10_first_last_ratio": math.log10(ratio) if _finite(ratio) and ratio > 0 else None,
        "gamma": grad.get("gamma"),
        "alerts_announced": float(sum((metrics.get("alerts_announced") or {}).values())),
        "best_val_loss": (metrics.get("training") or {}).get("best_val_loss"),
    }
    return {f"hparams/{k}": float(v) for k, v in values.items() if _finite(v)}


def config_markdown(config: Mapping[str, Any]) -> str:
    """The config as YAML in a markdown code block (TensorBoard's text plugin renders it).

    Example:
        >>> print(config_markdown({"seed": 42}))
            seed: 42
    """
    text = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)
    return "\n".join(f"    {line}" for line in text.rstrip().splitlines())


def log_final(
    loggers: Iterable[Any], params: Mapping[str, Any], metrics: Mapping[str, float], step: int
) -> None:
    """An HParams session (``params`` with ``metrics``) on each TensorBoard logger, and
    ``metrics`` in each W&B run summary. Call on global rank zero, after testing."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(dict(params), dict(metrics), step=step)
            logger.finalize("success")  # flush and close the events, rewrite hparams.yaml
        elif isinstance(logger, WandbLogger):
            logger.experiment.summary.update(dict(metrics))
