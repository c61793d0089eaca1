"""Collect the ``metrics.json`` of a sweep into one table (markdown + CSV).

Each run is one row: QLIKE, ratio to HAR, MSE of log variance, Mincer–Zarnowitz R², alerts by
kind, the first/last-layer gradient-norm ratio and γ, the largest raw and applied gradient norms
and the wall time; the baselines on the same test split follow (once per data set). A run is
labelled by the overrides that differ between the runs (``model=lstm``, ``model.depth=20`` ...).

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
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

METRICS_FILE = "metrics.json"
TABLE_MD = "comparison.md"
TABLE_CSV = "comparison.csv"
COLUMNS = (
    "run",
    "qlike",
    "ratio_har",
    "mse_log",
    "mz_r2",
    "alerts",
    "grad_ratio",
    "gamma",
    "grad_max",
    "applied_grad_max",
    "epochs",
    "wall_s",
)
# where a run wrote and how many threads it used: never part of its label
_NOISE = ("hydra.", "paths.", "num_threads=")


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


def labels(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per run, the overrides that differ between runs (all of them if only one run)."""
    overrides = [
        [o for o in r["run"].get("overrides", []) if not o.startswith(_NOISE)] for r in records
    ]
    common = set.intersection(*map(set, overrides)) if len(records) > 1 else set()
    out = []
    for record, ovs in zip(records, overrides, strict=True):
        varying = [o for o in ovs if o not in common]
        out.append(" ".join(varying) or f"model={record['run']['model']}")
    return out


def comparison_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Formatted table rows: one per run, then the baselines (once per data set)."""
    rows = []
    for label, rec in zip(labels(records), records, strict=True):
        test, grad = rec.get("test", {}), rec.get("gradient", {})
        rows.append(
            {
                "run": label,
                "qlike": _fixed(test.get("qlike"), 4),
                "ratio_har": _fixed(test.get("qlike_ratio_har")),
                "mse_log": _fixed(test.get("mse_log")),
                "mz_r2": _fixed(test.get("mz_r2")),
                "alerts": _alerts(rec.get("alerts", {})),
                "grad_ratio": _sci(grad.get("first_last_ratio")),
                "gamma": _sci(grad.get("gamma"), 3),
                "grad_max": _sci(grad.get("grad_norm_max")),
                "applied_grad_max": _sci(grad.get("applied_grad_norm_max")),
                "epochs": str(rec.get("training", {}).get("epochs", "")),
                "wall_s": _fixed(rec.get("wall_time_s"), 1),
            }
        )
    first_of_data: dict[Any, Mapping[str, Any]] = {}
    for rec in records:
        first_of_data.setdefault(rec["run"].get("data"), rec)
    for data, rec in first_of_data.items():
        prefix = "baseline" if len(first_of_data) == 1 else f"baseline ({data})"
        for base in rec.get("baselines", []):
            row = dict.fromkeys(COLUMNS, "")
            row.update(
                run=f"{prefix}: {base['model']}",
                qlike=_fixed(base["qlike"], 4),
                ratio_har=_fixed(base["ratio_har"]),
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
    from lightning_gradflow.volatility import format_table  # here: the CLI stays light

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


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m recipes.compare <sweep dir>``: write and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("sweep_dir", type=Path)
    print(write_comparison(parser.parse_args(argv).sweep_dir))


if __name__ == "__main__":
    main()
