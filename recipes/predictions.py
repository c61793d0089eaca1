"""``predictions.csv``: the test period's forecasts, one row per test target.

Columns ``date,realised,<model>,har,garch,ewma``: the last day of the target window, the
realised variance proxy the test metrics score against, and the variance forecasts of the
network and of three baselines on the same origins (empty cells: a network that was not
scored). Rolling-origin runs write one file per test year and join them in the run dir.

Example:
    >>> import io, numpy as np
    >>> from recipes.volatility import Forecast
    >>> out = io.StringIO()
    >>> fc = {n: Forecast(np.array([1.0, 2.0])) for n in PREDICTED_BASELINES}
    >>> write_predictions(out, np.array(["2016-01-04", "2016-01-05"], dtype="datetime64[D]"),
    ...     np.array([1.5, 2.5]), fc, model="lstm")
    >>> print(out.getvalue().strip())
    date,realised,lstm,har,garch,ewma
    2016-01-04,1.5,,1.0,1.0,1.0
    2016-01-05,2.5,,2.0,2.0,2.0
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

PREDICTIONS_FILE = "predictions.csv"
PREDICTED_BASELINES = ("har", "garch", "ewma")


def write_predictions(
    out: IO[str],
    dates: np.ndarray,
    realised: np.ndarray,
    forecasts: Mapping[str, Any],
    model: str,
) -> None:
    """Write the rows; ``forecasts`` maps names to ``Forecast`` (``variance`` is written)."""
    columns = [model, *PREDICTED_BASELINES]
    series = [forecasts[c].variance if c in forecasts else None for c in columns]
    for values in series:
        if values is not None and len(values) != len(dates):
            raise ValueError(f"{len(values)} forecasts for {len(dates)} test dates")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date", "realised", *columns])
    for i, date in enumerate(dates):
        cells = ["" if s is None else repr(float(s[i])) for s in series]
        writer.writerow([str(date), repr(float(realised[i])), *cells])


def join_predictions(parts: Sequence[Path], path: Path) -> None:
    """Concatenate per-year ``predictions.csv`` files (same header) into ``path``."""
    texts = [p.read_text().splitlines() for p in parts if p.is_file()]
    if texts:
        lines = [texts[0][0], *(line for text in texts for line in text[1:])]
        path.write_text("\n".join(lines) + "\n")
