"""Collect the ``metrics.json`` of a sweep into one table (markdown + CSV).

Each configuration is one row: QLIKE, ratio to HAR and to LHAR, the Diebold–Mariano t (QLIKE,
Newey–West) against HAR, log-HAR and LHAR (negative: the network is better), the share of seeds
whose network is in the Model Confidence Set (``arch.bootstrap.MCS`` at 10%, over the network and
every baseline), the SPA p-value (``arch.bootstrap.SPA``, consistent; the network is the benchmark
and the baselines the alternatives: a small p-value means a baseline beats it), MSE of log variance,
Mincer–Zarnowitz R², alerts by kind, the first/last-layer gradient-norm ratio and γ, the largest raw
and applied gradient norms and the wall time; the baselines on the same test split follow (once per
data set). A configuration is labelled by its run name (``model=resnet,model.net.depth=20``,
see :mod:`recipes.run_names`; older records without one: the overrides that differ between the
runs) without ``seed=``: runs that differ only in their seed form one row, ``mean ± sd`` over the
seeds (``seeds`` says how many; sd with ``n - 1``). Rows keep the numeric job order (job 10
after job 2). Rolling-origin runs report pooled test losses. At the end of a multirun the
sweep's report (``report.html``, :mod:`lightning_gradflow.report`) is written beside the table.

Usage:
    python -m recipes.compare <sweep dir>     # writes comparison.md / comparison.csv there

Example:
    >>> _sci(1.234e-5), _sci(None), _alerts({"vanishing": 3, "exploding": 1})
    ('1.2e-05', '', 'exploding:1 vanishing:3')
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
TABLE_MD = "comparison.md"
TABLE_CSV = "comparison.csv"
COLUMNS = (
    "run",
    "seeds",
    "status",
    "qlike",
    "ratio_har",
    "ratio_lhar",
    "dm_har",
    "dm_log_har",
    "dm_lhar",
    "in_mcs",
    "spa_p",
    "mse_log",
    "mz_r2",
    "alerts",
    "grad_ratio",
    "gamma",
    "grad_max",
    "applied_grad_max",
    "epochs",
    "wall_s",
    "failure",
)
_FAILURE_CHARS = 200  # a failed run's alert message is cut to this many characters
# where a run wrote, how many threads it used and its seed: never part of its label
_NOISE = ("hydra.", "paths.", "num_threads=", "seed=")


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The ``metrics.json`` records under ``sweep_dir``, in job order.

    Raises:
        FileNotFoundError: if there is none.
    """
    sweep_dir = Path(sweep_dir)
    paths = sorted(sweep_dir.rglob(METRICS_FILE), key=lambda p: _job_key(p, sweep_dir))
    if not paths:
        raise FileNotFoundError(f"no {METRICS_FILE} under {sweep_dir}")
    return [json.loads(p.read_text()) for p in paths]


def _job_key(path: Path, root: Path) -> tuple[Any, ...]:
    parts = path.parent.relative_to(root).parts
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def _sci(value: float | None, digits: int = 2) -> str:
    if value is None:
        return ""
    return "0" if value == 0 else f"{value:.{digits - 1}e}"


def _fixed(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _alerts(counts: Mapping[str, int]) -> str:
    return " ".join(f"{kind}:{n}" for kind, n in sorted(counts.items()) if n) or "none"


def alert_summary(metrics: Mapping[str, Any]) -> str:
    """Alerts announced per kind, with the steps each condition held in brackets (records
    from before ``alerts_announced`` existed show the steps alone).

    Example:
        >>> alert_summary({"alerts": {"vanishing": 201}, "alerts_announced": {"vanishing": 3}})
        'vanishing:3 (201 steps)'
        >>> alert_summary({"alerts": {}}), alert_summary({"alerts": {"vanishing": 9}})
        ('none', 'vanishing:9')
    """
    steps = metrics.get("alerts") or {}
    announced = metrics.get("alerts_announced")
    if announced is None:
        return _alerts(steps)
    parts = []
    for kind, n in sorted(announced.items()):
        held = steps.get(kind, n)
        if n:
            parts.append(f"{kind}:{n} ({held} step{'' if held == 1 else 's'})")
    return " ".join(parts) or "none"


def _values(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None]


def mean_sd(values: Sequence[float | None], fmt=_fixed, **kwargs: Any) -> str:
    """``mean ± sd`` (sd with ``n - 1``) of the values present; the value alone for one.

    Example:
        >>> mean_sd([0.9, 1.0, None, 1.1]), mean_sd([2.0]), mean_sd([None])
        ('1.000 ± 0.100', '2.000', '')
    """
    present = _values(values)
    if not present:
        return ""
    mean = sum(present) / len(present)
    if len(present) == 1:
        return fmt(mean, **kwargs)
    sd = (sum((v - mean) ** 2 for v in present) / (len(present) - 1)) ** 0.5
    return f"{fmt(mean, **kwargs)} ± {fmt(sd, **kwargs)}"


def _failed(record: Mapping[str, Any]) -> bool:
    return record.get("status") == "failed"


def _status(records: Sequence[Mapping[str, Any]]) -> str:
    """``ok``, ``failed`` or, for seeds that differ, ``failed k/n``."""
    failed = sum(map(_failed, records))
    if not failed:
        return "ok"
    return "failed" if failed == len(records) else f"failed {failed}/{len(records)}"


def failure(record: Mapping[str, Any]) -> str:
    """What ended a failed run: the alerts that raised (kind, step, message) or the error.

    Example:
        >>> failure({"status": "failed", "error": {"type": "GradientPathologyError",
        ...     "message": "...", "step": 7, "alerts": [{"kind": "exploding", "step": 7,
        ...     "severity": "critical", "message": "norm 1e9 | 40x median"}]}})
        'GradientPathologyError: exploding @ step 7: norm 1e9 / 40x median'
        >>> failure({"status": "ok"})
        ''
    """
    if not _failed(record):
        return ""
    error = record.get("error") or {}
    causes = [f"{a['kind']} @ step {a['step']}: {a['message']}" for a in error.get("alerts", [])]
    if not causes:
        first = (error.get("message") or "").strip().splitlines()
        causes = [f"at step {error.get('step')}: {first[0] if first else ''}"]
    text = f"{error.get('type', 'error')}: " + "; ".join(causes)
    text = " ".join(text.split()).replace("|", "/")  # one line, no markdown cell breaks
    return text if len(text) <= _FAILURE_CHARS else text[: _FAILURE_CHARS - 1] + "…"


def _share(flags: Sequence[bool | None]) -> str:
    present = [bool(f) for f in flags if f is not None]
    return f"{sum(present)}/{len(present)}" if present else ""


def _without_seed(name: str) -> str:
    parts = [p for p in name.split(",") if not p.startswith(("seed=", "+seed=", "++seed="))]
    return ",".join(parts)


def labels(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per run, its run name without ``seed=``; for records without a run name, the overrides
    that differ between runs (all of them if only one run), comma-separated."""
    overrides = [
        [o for o in r["run"].get("overrides", []) if not o.startswith(_NOISE)] for r in records
    ]
    common = set.intersection(*map(set, overrides)) if len(records) > 1 else set()
    out = []
    for record, ovs in zip(records, overrides, strict=True):
        name = _without_seed(record["run"].get("run_name") or "")
        varying = ",".join(o for o in ovs if o not in common)
        out.append(name or varying or f"model={record['run']['model']}")
    return out


def comparison_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Formatted table rows: one per configuration (seeds aggregated), then the baselines."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for label, rec in zip(labels(records), records, strict=True):
        groups.setdefault(label, []).append(rec)
    rows = []
    for label, recs in groups.items():
        tests = [r.get("test", {}) for r in recs]
        grads = [r.get("gradient", {}) for r in recs]
        alerts: dict[str, int] = {}
        announced: dict[str, int] | None = None
        for rec in recs:
            for kind, n in rec.get("alerts", {}).items():
                alerts[kind] = alerts.get(kind, 0) + n
            if rec.get("alerts_announced") is not None:
                announced = announced or {}
                for kind, n in rec["alerts_announced"].items():
                    announced[kind] = announced.get(kind, 0) + n

        def col(key: str, source: Sequence[Mapping[str, Any]] = tests, **kw: Any) -> str:
            return mean_sd([s.get(key) for s in source], **kw)

        rows.append(
            {
                "run": label,
                "seeds": str(len(recs)),
                "status": _status(recs),
                "qlike": col("qlike", digits=4),
                "ratio_har": col("qlike_ratio_har"),
                "ratio_lhar": col("qlike_ratio_lhar"),
                "dm_har": col("dm_t_har", digits=2),
                "dm_log_har": col("dm_t_log_har", digits=2),
                "dm_lhar": col("dm_t_lhar", digits=2),
                "in_mcs": _share([t.get("in_mcs") for t in tests]),
                "spa_p": col("spa_pvalue"),
                "mse_log": col("mse_log"),
                "mz_r2": col("mz_r2"),
                "alerts": alert_summary({"alerts": alerts, "alerts_announced": announced}),
                "grad_ratio": col("first_last_ratio", grads, fmt=_sci),
                "gamma": col("gamma", grads, fmt=_sci, digits=3),
                "grad_max": col("grad_norm_max", grads, fmt=_sci),
                "applied_grad_max": col("applied_grad_norm_max", grads, fmt=_sci),
                "epochs": mean_sd([r.get("training", {}).get("epochs") for r in recs], digits=1),
                "wall_s": mean_sd([r.get("wall_time_s") for r in recs], digits=1),
                "failure": "; ".join(dict.fromkeys(filter(None, map(failure, recs)))),
            }
        )
    first_of_data: dict[Any, Mapping[str, Any]] = {}
    for rec in records:  # a failed run has no baselines: take them from a run that scored
        if rec.get("baselines"):
            first_of_data.setdefault(rec["run"].get("data"), rec)
    for data, rec in first_of_data.items():
        prefix = "baseline" if len(first_of_data) == 1 else f"baseline ({data})"
        for base in rec.get("baselines", []):
            row = dict.fromkeys(COLUMNS, "")
            row.update(
                run=f"{prefix}: {base['model']}",
                qlike=_fixed(base["qlike"], 4),
                ratio_har=_fixed(base["ratio_har"]),
                ratio_lhar=_fixed(base.get("ratio_lhar")),
                in_mcs=_share([base.get("in_mcs")]),
                mse_log=_fixed(base["mse_log"]),
                mz_r2=_fixed(base["mz_r2"]),
            )
            rows.append(row)
    return rows


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def write_comparison(sweep_dir: str | Path) -> str:
    """Write ``comparison.md`` and ``comparison.csv`` into ``sweep_dir``; return the markdown.

    Safe to call from several jobs at once (each file is replaced atomically).
    """
    from recipes.volatility import format_table  # here: the CLI stays light

    sweep_dir = Path(sweep_dir)
    records = collect(sweep_dir)
    rows = comparison_rows(records)
    data = ", ".join(dict.fromkeys(str(r["run"].get("data", "")) for r in records))
    table = format_table(rows, COLUMNS)  # cells are already formatted strings
    title = f"# {records[0]['run'].get('task_name', 'comparison')} ({len(records)} runs, {data})"
    _atomic_write(sweep_dir / TABLE_MD, f"{title}\n\n{table}\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(sweep_dir / TABLE_CSV, buffer.getvalue())
    return f"{title}\n\n{table}"


class CompareSweep(Callback):
    """Hydra callback (``hydra.callbacks``): write the comparison when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            table = write_comparison(sweep_dir)
        except FileNotFoundError:  # every job failed or none wrote metrics
            return
        print(f"\n{table}\n\nwritten to {sweep_dir / TABLE_MD} and {sweep_dir / TABLE_CSV}")
        write_report(sweep_dir)


def write_report(sweep_dir: Path) -> None:
    """``report.html`` in the sweep directory; a warning (and no report) where its optional
    dependencies (tensorboard, matplotlib) are not installed."""
    from lightning_gradflow.report import build_report

    try:
        path = build_report(sweep_dir)
    except ImportError as error:
        log.warning("no report.html for %s: %s", sweep_dir, error)
        return
    print(f"report: {path}")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m recipes.compare <sweep dir>``: write and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("sweep_dir", type=Path)
    print(write_comparison(parser.parse_args(argv).sweep_dir))


if __name__ == "__main__":
    main()
