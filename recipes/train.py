"""Train one forecasting network with GradFlowMonitor on, test it against the baselines.

Everything comes from ``conf/`` (``_target_`` instantiation); every file goes under the Hydra
run directory (``${hydra:runtime.output_dir}``): ``.hydra/``, the loggers' folders,
``checkpoints/``, ``gradflow_alerts.jsonl``, ``gradflow_summary.json``, ``metrics.json``
(test metrics, the baselines on the same split, alerts by kind, gradient summary, wall time)
and ``predictions.csv`` (see :mod:`recipes.predictions`). Only global rank zero writes them.
Runs are named after their overrides (:mod:`recipes.run_names`); after testing the TensorBoard
HParams table gets the run's hyperparameters and results (:mod:`recipes.dashboards`).
A single run prints a progress bar and its results table; a multirun job prints one line, and
the sweep directory gets ``comparison.md`` / ``comparison.csv`` (see :mod:`recipes.compare`)
with the baselines once, and the report (``report.html``).

Usage:
    python -m recipes.train model=transformer_prenorm   (or: python recipes/train.py ...)
    python -m recipes.train trainer=ddp trainer.devices=4
    python -m recipes.train -m experiment=compare_architectures
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python recipes/train.py`: make the `recipes` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recipes.compare import METRICS_FILE, alert_summary
from recipes.resolvers import CONFIG_DIR, job_names

log = logging.getLogger(__name__)


def instantiate_group(node: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a ``callbacks``/``logger`` mapping, in order."""
    if not node:
        return []
    if not isinstance(node, Mapping):
        raise TypeError(f"expected a mapping of name -> config, got {type(node).__name__}")
    return [instantiate(c) for c in node.values() if isinstance(c, Mapping) and "_target_" in c]


def _run_info(cfg: DictConfig) -> dict[str, Any]:
    """Who the run is: task, model, data, overrides, name, group, where it wrote."""
    info: dict[str, Any] = {
        "task_name": cfg.get("task_name"),
        "output_dir": cfg.paths.output_dir,
        "strategy": cfg.trainer.get("strategy"),
        "devices": cfg.trainer.get("devices"),
        "num_nodes": cfg.trainer.get("num_nodes"),
    }
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        info.update(
            model=hc.runtime.choices.get("model"),
            data=hc.runtime.choices.get("data"),
            experiment=hc.runtime.choices.get("experiment"),
            trainer=hc.runtime.choices.get("trainer"),
            overrides=list(hc.overrides.task),
            multirun=multirun,
            sweep_dir=str(hc.sweep.dir) if multirun else None,
        )
    else:  # called with a composed config, without @hydra.main
        net = str(cfg.model.net.get("_target_", ""))
        info.update(model=net.rsplit(".", 1)[-1], data=cfg.data.get("source"), overrides=[])
    names = job_names(str(info["task_name"]), str(info["model"]))
    info.update(run_name=names.name, run_group=names.group)
    return info


# a deprecation inside Lightning's own code (torch >= 2.10), printed twice per fit
_LIGHTNING_NOISE = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


def _quiet_console(multirun: bool) -> None:
    """No Lightning deprecation noise; in a multirun job no Lightning info lines either
    (devices, checkpoint restored, fit stopped): the job prints one result line."""
    warnings.filterwarnings("ignore", message=_LIGHTNING_NOISE)
    if multirun:
        for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)


def train(cfg: DictConfig) -> dict[str, Any] | None:
    """Fit, test, score the baselines and write ``metrics.json``.

    With ``cfg.rolling`` set (``experiment=rolling_origin``) the model is re-trained for every
    test year and ``metrics.json`` holds the pooled and per-year scores (see :func:`_rolling`).

    A fit that dies (e.g. ``GradientPathologyError`` from ``callbacks.gradflow.on_alert=raise``)
    still writes ``metrics.json`` with ``status: failed``, the ``error`` (type, message, step and,
    for the monitor's error, the alerts that raised it) and the gradient summary so far, and a
    multirun's comparison shows it as a failed row; then the error propagates (the job fails).

    Returns:
        The metrics on global rank zero; ``None`` on the other ranks.
    """
    import pytorch_lightning as pl
    import torch

    start = time.perf_counter()
    _quiet_console(_multirun())
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        if cfg.get("rolling"):
            metrics = _rolling(cfg, start)
        else:
            result = _fit_and_score(cfg, start)
            if result is None:
                return None
            metrics = result[0]
    except Exception as error:
        failed = getattr(error, _FAILED, None)
        if failed is not None:  # rank zero of a fit that died: report it, then fail the job
            _write_metrics(cfg, failed)
        raise
    _write_metrics(cfg, metrics)
    return metrics


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _write_metrics(cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """``metrics.json``, the printout (one line in a multirun job) and the sweep's comparison."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    multirun = metrics["run"].get("multirun")
    print(_result_line(metrics) if multirun else _report(metrics), flush=True)
    if multirun:
        from recipes.compare import write_comparison, write_report

        write_comparison(metrics["run"]["sweep_dir"])
        if metrics.get("status") == "failed":  # Hydra skips the end-of-sweep report then
            write_report(Path(metrics["run"]["sweep_dir"]))


# the attribute of an exception from a failed fit that carries its metrics (rank zero only)
_FAILED = "gradflow_failed_metrics"


def _failed_metrics(
    cfg: DictConfig, trainer: Any, error: BaseException, start: float
) -> dict[str, Any]:
    """``metrics.json`` of a fit that raised: the error, the alerts that raised it, the gradient
    summary so far (``RunSummary`` writes it on the exception) and how far training got."""
    raised = [
        {"kind": a.kind, "severity": a.severity, "step": a.step, "message": a.message}
        for a in getattr(error, "alerts", None) or []
    ]
    elapsed = time.perf_counter() - start
    return {
        "run": _run_info(cfg),
        "status": "failed",
        "error": {
            "type": type(error).__name__,
            "message": str(error),
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "alerts": raised,
        },
        "test": {},
        "test_error": None,
        "baselines": [],
        "significance": {},
        **_gradient_record(Path(cfg.paths.output_dir), trainer, best=None),
        "fit_time_s": elapsed,
        "wall_time_s": elapsed,
    }


def _fit_and_score(cfg: DictConfig, start: float) -> tuple[dict[str, Any], Any] | None:
    """One fit and test: the metrics and the test split's ``Evaluation`` (rank zero only)."""
    from recipes.callbacks import ProgressBar, RunSummary
    from recipes.dashboards import curated_hparams, final_metrics, log_final

    output_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate(cfg.data, _convert_="all")
    forecaster = instantiate(cfg.model, _convert_="all")
    config = OmegaConf.to_container(cfg, resolve=True)
    summary = RunSummary(output_dir, config=config)
    callbacks = [*instantiate_group(cfg.get("callbacks")), summary]
    if cfg.trainer.get("enable_progress_bar"):
        callbacks.append(ProgressBar())
    loggers = instantiate_group(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        try:
            trainer.fit(forecaster, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        except Exception as error:
            if trainer.is_global_zero:  # train() writes it, then lets the error go on
                setattr(error, _FAILED, _failed_metrics(cfg, trainer, error, start))
            raise
        fit_s = time.perf_counter() - start
        _release_process_group()
        if not trainer.is_global_zero:
            return None  # rank zero tests on one device and writes every file
        metrics, evaluation = _score(cfg, trainer, forecaster, datamodule)
        metrics.update(fit_time_s=fit_s, wall_time_s=time.perf_counter() - start)
        run = metrics["run"]
        params = curated_hparams(config, model=str(run["model"]), run=run["run_name"])
        log_final(loggers, params, final_metrics(metrics), step=trainer.global_step)
        return metrics, evaluation
    finally:
        if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
            import wandb

            wandb.finish()


def _rolling(cfg: DictConfig, start: float) -> dict[str, Any]:
    """Expanding-window evaluation: one fit per test year, pooled like one long test split.

    Each year runs in ``<output_dir>/origin_<year>`` with ``data.train_end/val_end/test_end``
    from :func:`~recipes.volatility.rolling.rolling_origins` (single device).
    """
    from recipes.predictions import PREDICTIONS_FILE, join_predictions
    from recipes.volatility.rolling import YearResult, pool, rolling_origins

    output_dir = Path(cfg.paths.output_dir)
    origins = rolling_origins(cfg.rolling.test_years, cfg.rolling.get("val_years", 1))
    years, records = [], []
    for origin in origins:
        year_cfg = OmegaConf.to_container(cfg, resolve=False)  # paths resolve per year
        year_cfg["data"].update(origin.overrides())
        year_cfg["paths"]["output_dir"] = str(output_dir / f"origin_{origin.test_year}")
        year_cfg["rolling"] = None
        try:
            result = _fit_and_score(OmegaConf.create(year_cfg), time.perf_counter())
        except Exception as error:
            failed = getattr(error, _FAILED, None)
            if failed is not None:  # the whole run failed in this year: say so at the top
                failed["run"] = _run_info(cfg) | {
                    "rolling": [o.test_year for o in origins],
                    "failed_test_year": origin.test_year,
                }
                failed["alerts_file"] = None
                failed["wall_time_s"] = time.perf_counter() - start
            raise
        if result is None:
            raise RuntimeError("rolling-origin runs need a single device (trainer.devices=1)")
        metrics, evaluation = result
        records.append(metrics)
        years.append(YearResult(origin.test_year, evaluation.realised, evaluation.forecasts))
    join_predictions(
        [output_dir / f"origin_{o.test_year}" / PREDICTIONS_FILE for o in origins],
        output_dir / PREDICTIONS_FILE,
    )
    model = str(records[0]["run"]["model"])
    scored = all(r["test"] for r in records)
    pooled = pool(
        years,
        models=[model] if scored else [],
        horizon=int(cfg.data.horizon),
        seed=int(cfg.get("seed") or 0),
    )
    test: dict[str, Any] = {}
    if scored:
        row = next(r for r in pooled["pooled"] if r["model"] == model)
        dm = pooled["significance"]["dm"][model]
        test = {
            "qlike": row["qlike"],
            "mse_log": row["mse_log"],
            "mz_r2": row["mz_r2"],
            "qlike_ratio_har": row["ratio_har"],
            "qlike_ratio_lhar": row["ratio_lhar"],
            **{f"dm_t_{ref}": d["t"] for ref, d in dm.items()},
            "in_mcs": pooled["significance"]["mcs"][model]["in_mcs"],
            "mcs_pvalue": pooled["significance"]["mcs"][model]["pvalue"],
            **_spa_metrics(pooled["significance"], model),
        }
    mcs = pooled["significance"]["mcs"]
    last = records[-1]
    return {
        "run": _run_info(cfg) | {"rolling": [o.test_year for o in origins]},
        "status": "ok",
        "test": test,
        "test_error": next((r["test_error"] for r in records if r["test_error"]), None),
        "baselines": [
            {**r, "in_mcs": mcs[r["model"]]["in_mcs"]}
            for r in pooled["pooled"]
            if r["model"] != model
        ],
        "significance": pooled["significance"],
        "per_year": [
            {
                "test_year": y["test_year"],
                "rows": y["rows"],
                "epochs": rec["training"]["epochs"],
                "wall_time_s": rec["wall_time_s"],
            }
            for y, rec in zip(pooled["per_year"], records, strict=True)
        ],
        "alerts": {
            k: sum(r["alerts"].get(k, 0) for r in records)
            for k in sorted({k for r in records for k in r["alerts"]})
        },
        "alerts_file": None,
        "gradient": last["gradient"],
        "training": {"epochs": sum(r["training"]["epochs"] for r in records)},
        "fit_time_s": sum(r["fit_time_s"] for r in records),
        "wall_time_s": time.perf_counter() - start,
    }


def _score(
    cfg: DictConfig, trainer: Any, forecaster: Any, datamodule: Any
) -> tuple[dict[str, Any], Any]:
    """Test metrics, baselines on the same split, alerts and the gradient summary; and the
    test split's ``Evaluation`` (every forecast and the realised proxy), also written to
    ``predictions.csv``."""
    from recipes.predictions import PREDICTIONS_FILE, write_predictions
    from recipes.volatility import Forecast, evaluate_split, significance

    info = _run_info(cfg)
    output_dir = Path(cfg.paths.output_dir)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    test_metrics: dict[str, float] = {}
    test_error: str | None = None
    extra: dict[str, Any] = {}
    if cfg.get("test"):
        try:
            _test(cfg, trainer, forecaster, datamodule, best)
        except ValueError as err:  # a diverged model: non-finite or zero variance forecasts
            test_error = f"{type(err).__name__}: {err}"
            log.warning("testing failed, no forecast metrics for this run: %s", test_error)
        else:
            test_metrics = dict(forecaster.test_metrics)
            pred = forecaster.test_predictions
            extra[str(info["model"])] = Forecast(pred["variance_forecast"], pred["log_forecast"])
    datamodule.setup("test")
    evaluation = evaluate_split(datamodule, extra=extra)
    output_dir.mkdir(parents=True, exist_ok=True)
    with (output_dir / PREDICTIONS_FILE).open("w", newline="") as out:
        dates = datamodule.split_targets("test")[0]
        write_predictions(out, dates, evaluation.realised, evaluation.forecasts, str(info["model"]))
    rows = evaluation.rows
    tests: dict[str, Any] = {}
    if extra:  # DM of the network against HAR, log-HAR and LHAR; the MCS over every forecast
        name = next(iter(extra))
        tests = significance(
            evaluation.realised,
            {k: fc.variance for k, fc in evaluation.forecasts.items()},
            models=[name],
            horizon=datamodule.horizon,
            seed=int(cfg.get("seed") or 0),
        )
        row = next(r for r in rows if r["model"] == name)
        test_metrics["qlike_ratio_lhar"] = row["ratio_lhar"]
        test_metrics.update(
            {f"dm_t_{ref}": dm["t"] for ref, dm in tests["dm"][name].items()},
            in_mcs=tests["mcs"][name]["in_mcs"],
            mcs_pvalue=tests["mcs"][name]["pvalue"],
            **_spa_metrics(tests, name),
        )

    metrics = {
        "run": info,
        "status": "ok",
        "test": test_metrics,
        "test_error": test_error,
        "baselines": [
            {**r, **({"in_mcs": tests["mcs"][r["model"]]["in_mcs"]} if tests else {})}
            for r in rows
            if r["model"] not in extra
        ],
        "significance": tests,
        **_gradient_record(output_dir, trainer, best),
    }
    return metrics, evaluation


def _gradient_record(output_dir: Path, trainer: Any, best: str | None) -> dict[str, Any]:
    """The run's alert counts, alerts file, gradient summary and how far training got."""
    from lightning_gradflow.writers.alert_file import ALERTS_FILE
    from recipes.callbacks import SUMMARY_FILE

    summary_path = output_dir / SUMMARY_FILE
    gradient = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    alerts_files = sorted(output_dir.rglob(ALERTS_FILE))
    announced = Counter(a["kind"] for a in gradient.get("alerts", []))
    return {
        "alerts": gradient.pop("alert_counts", {}),  # steps each condition held
        "alerts_announced": dict(sorted(announced.items())),
        "alerts_file": str(alerts_files[0].relative_to(output_dir)) if alerts_files else None,
        "gradient": {k: v for k, v in gradient.items() if k not in ("alerts", "steps", "epochs")},
        "training": {
            "steps": trainer.global_step,
            "epochs": trainer.current_epoch,
            "best_val_loss": gradient.get("best_val_loss"),
            "best_checkpoint": best,
        },
    }


def _spa_metrics(tests: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The SPA test with the network as the benchmark and the baselines as the alternatives:
    ``spa_pvalue`` (consistent; small: some baseline beats the network) and ``spa_beaten_by``."""
    spa = (tests.get("spa") or {}).get(model)
    if not spa:
        return {}
    return {"spa_pvalue": spa["pvalue"], "spa_beaten_by": spa["better"]}


def _test(
    cfg: DictConfig, trainer: Any, forecaster: Any, datamodule: Any, best: str | None
) -> None:
    """Score the best weights on the test split on one device (each sample exactly once)."""
    import torch

    if trainer.num_devices * trainer.num_nodes == 1:
        trainer.test(forecaster, datamodule=datamodule, ckpt_path=best, verbose=False)
        return
    # the other ranks have left after fit (the process group is gone): test here alone
    if best:
        state = torch.load(best, map_location="cpu", weights_only=False)
        forecaster.load_state_dict(state["state_dict"])
    _single_device_trainer(cfg).test(forecaster, datamodule=datamodule, verbose=False)


def _release_process_group() -> None:
    """End DDP after a successful fit on every rank, while the interpreter is fully alive.

    Lightning leaves the group alive; a gloo group destroyed only at interpreter exit can abort
    the process (pytorch#190489). Not done after a failed fit: another rank may still be inside
    a collective.
    """
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _single_device_trainer(cfg: DictConfig) -> Any:
    """A Trainer that tests on one device, without loggers or checkpoints."""
    import pytorch_lightning as pl

    return pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        num_nodes=1,
        precision=cfg.trainer.get("precision", "32-true"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=cfg.paths.output_dir,
    )


def _report(metrics: Mapping[str, Any]) -> str:
    """The end-of-run printout: the model against the baselines, then gradient health."""
    from recipes.volatility import format_table

    run = metrics["run"]
    if metrics.get("status") == "failed":
        return _failure_report(metrics)
    rows = list(metrics["baselines"])
    if metrics["test"]:
        test = metrics["test"]
        model_row = {
            "model": run.get("model"),
            "ratio_har": test["qlike_ratio_har"],
            "ratio_lhar": test.get("qlike_ratio_lhar"),
            **test,
        }
        rows.insert(0, model_row)
    if metrics.get("per_year"):  # rolling origin: the table holds the pooled test years
        years = run["rolling"]
        what = f"Pooled test years {years[0]}-{years[-1]}, {len(years)} re-estimations,"
    else:
        what = "Test split"
    lines = [f"\n{what} ({run.get('data')}), {run['output_dir']}"]
    if metrics["test_error"]:
        lines.append(f"model not scored: {metrics['test_error']}")
    columns = ["model", "qlike", "ratio_har", "ratio_lhar", "mse_log", "mz_r2"]
    if metrics.get("significance"):
        columns.append("in_mcs")
    lines.append(format_table([{c: r.get(c, "") for c in columns} for r in rows], columns))
    for ref, dm in (
        (metrics.get("significance") or {}).get("dm", {}).get(run.get("model"), {}).items()
    ):
        lines.append(
            f"Diebold–Mariano (QLIKE, Newey–West, {dm['bandwidth']} lags) vs {ref}: "
            f"t = {dm['t']:.2f}, p = {dm['pvalue']:.3f}"
        )
    spa = metrics["test"].get("spa_pvalue")
    if spa is not None:
        beaten = ", ".join(metrics["test"]["spa_beaten_by"]) or "none at 10%"
        lines.append(
            f"SPA (QLIKE; benchmark {run.get('model')}, alternatives: the baselines): "
            f"p = {spa:.3f} (consistent); beaten by: {beaten}"
        )
    if metrics.get("per_year"):
        lines.append(f"pooled over test years {run['rolling'][0]}..{run['rolling'][-1]}; per year:")
        per_year = []
        for year in metrics["per_year"]:
            by_model = {r["model"]: r for r in year["rows"]}
            net = by_model.get(run.get("model"), {})
            per_year.append(
                {
                    "year": year["test_year"],
                    "n": by_model["har"]["n"],
                    "model_ratio_har": net.get("ratio_har", ""),
                    "model_ratio_lhar": net.get("ratio_lhar", ""),
                    "lhar_ratio_har": by_model["lhar"]["ratio_har"],
                    "log_har_ratio_har": by_model["log_har"]["ratio_har"],
                    "epochs": year["epochs"],
                    "wall_s": year["wall_time_s"],
                }
            )
        lines.append(format_table(per_year))
    return "\n".join([*lines, _gradient_report(metrics)])


def _result_line(metrics: Mapping[str, Any]) -> str:
    """A multirun job's printout: name, QLIKE and ratio to HAR (or why it failed), alerts,
    gradient ratio, wall time, directory. The baselines are in the sweep's comparison.

    Example:
        >>> print(_result_line({"run": {"run_name": "model=lstm", "output_dir": "out/3"},
        ...     "status": "ok", "test": {"qlike": 0.51, "qlike_ratio_har": 1.07},
        ...     "alerts": {}, "gradient": {"first_last_ratio": 0.4}, "wall_time_s": 9.2}))
        model=lstm: qlike 0.5100 (1.070 x HAR), alerts none, grad ratio 0.4, 9.2 s -> out/3
    """
    run, test = metrics["run"], metrics["test"]
    if metrics.get("status") == "failed":
        error = metrics["error"]
        kinds = ", ".join(dict.fromkeys(a["kind"] for a in error["alerts"]))
        result = f"FAILED {error['type']}{f' ({kinds})' if kinds else ''} at step {error['step']}"
    elif test:
        result = f"qlike {test['qlike']:.4f} ({test['qlike_ratio_har']:.3f} x HAR)"
        if run.get("rolling"):
            result += f" pooled over test years {run['rolling'][0]}-{run['rolling'][-1]}"
    else:
        result = f"not scored ({metrics.get('test_error') or 'test: false'})"
    alerts = alert_summary(metrics)
    ratio = metrics["gradient"].get("first_last_ratio")
    grad = "n/a" if ratio is None else f"{ratio:.2g}"
    return (
        f"{run['run_name']}: {result}, alerts {alerts}, grad ratio {grad}, "
        f"{metrics['wall_time_s']:.1f} s -> {run['output_dir']}"
    )


def _failure_report(metrics: Mapping[str, Any]) -> str:
    """The printout of a run whose fit raised: the error, the alerts that raised it, gradients."""
    run, error = metrics["run"], metrics["error"]
    where = f" in test year {run['failed_test_year']}" if run.get("failed_test_year") else ""
    lines = [
        f"\nRun FAILED{where} ({run.get('data')}, {run.get('model')}), {run['output_dir']}",
        f"{error['type']} at step {error['step']} (epoch {error['epoch']}); not scored",
    ]
    lines += [f"raised by {a['kind']} @ step {a['step']}: {a['message']}" for a in error["alerts"]]
    if not error["alerts"]:
        lines.append(error["message"].splitlines()[0] if error["message"] else "")
    return "\n".join([*lines, _gradient_report(metrics)])


def _gradient_report(metrics: Mapping[str, Any]) -> str:
    grad = metrics["gradient"]
    alerts = alert_summary(metrics)
    if metrics["alerts_file"]:
        alerts += f" (details: {metrics['alerts_file']})"
    ratio, gamma = grad.get("first_last_ratio"), grad.get("gamma")
    lines = [
        f"alerts: {alerts}",
        "gradient first/last-layer norm ratio: "
        + ("n/a" if ratio is None else f"{ratio:.3g} (gamma {gamma:.3g} per layer)"),
        f"wall time: {metrics['wall_time_s']:.1f} s (fit {metrics['fit_time_s']:.1f} s)",
    ]
    return "\n".join(lines)


def optimized_metric(cfg: DictConfig, metrics: Mapping[str, Any] | None) -> float | None:
    """The value at ``cfg.optimized_metric`` (a dotted path such as ``test.qlike``) in the
    metrics of :func:`train`; ``None`` without metrics (other ranks), path or value there.

    Example:
        >>> cfg = OmegaConf.create({"optimized_metric": "test.qlike"})
        >>> optimized_metric(cfg, {"test": {"qlike": 0.5}}), optimized_metric(cfg, {"test": {}})
        (0.5, None)
    """
    path = cfg.get("optimized_metric")
    if not metrics or not path:
        return None
    value: Any = metrics
    for key in str(path).split("."):
        if not isinstance(value, Mapping) or key not in value:
            log.warning("optimized_metric %s is not in this run's metrics", path)
            return None
        value = value[key]
    try:
        return float(value)
    except (TypeError, ValueError):
        log.warning("optimized_metric %s is %r, not a number", path, value)
        return None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``cfg.optimized_metric`` of the run (for sweepers that
    minimise it, e.g. Optuna), ``None`` on the ranks other than zero."""
    return optimized_metric(cfg, train(cfg))


if __name__ == "__main__":
    main()
