"""``gradflow_alerts.jsonl``: one JSON line per announced alert, local or through fsspec.

A local path is appended to. A URL (``s3://``, ``gs://``, ``memory://``, as Lightning loggers
accept for their ``save_dir``) is written through fsspec; object stores cannot append, so the
lines written so far are kept and the whole file is rewritten (alerts are rare, the file small).

Example:
    >>> import json, tempfile
    >>> path = tempfile.mkdtemp() + "/gradflow_alerts.jsonl"
    >>> sink = AlertFile(path)
    >>> sink.append({"kind": "vanishing", "step": 9})
    >>> [json.loads(line)["step"] for line in open(path)]
    [9]
"""

from __future__ import annotations

import json
import os
from typing import Any

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.sinks import Sink

ALERTS_FILE = "gradflow_alerts.jsonl"


def is_url(path: str) -> bool:
    """Whether ``path`` names a remote or fsspec location (``scheme://...``), not a local one."""
    return "://" in path and not path.startswith("file://")


def join(directory: str, name: str) -> str:
    """``directory/name`` for a local path or a URL (never a local folder named ``s3:``)."""
    if is_url(directory):
        return f"{directory.rstrip('/')}/{name}"
    return os.path.join(directory.removeprefix("file://"), name)


class AlertFile(Sink):
    """Appends JSON records, one per line, to a local file or an fsspec URL.

    As a sink it writes each announced alert with the running count of its kind.

    Args:
        path: a local path or a URL whose scheme fsspec knows.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lines: list[str] = []

    @classmethod
    def in_dir(cls, log_dir: str) -> AlertFile:
        """The run's ``gradflow_alerts.jsonl`` in ``log_dir`` (a local path or a URL)."""
        return cls(join(str(log_dir), ALERTS_FILE))

    @property
    def name(self) -> str:
        return self.path

    def alert(self, alert: Alert, count: int) -> None:
        self.append({**alert.to_dict(), "count": count})

    def append(self, record: dict[str, Any]) -> None:
        """Write one record; raises ``OSError`` (or fsspec's error) if the write fails."""
        line = json.dumps(record) + "\n"
        if not is_url(self.path):
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(self.path, "a") as f:
                f.write(line)
            return
        import fsspec

        fs, path = fsspec.core.url_to_fs(self.path)
        # object stores have no directories: mutants of the next line are equivalent there
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)  # pragma: no mutate
        with fs.open(path, "w") as f:
            f.write("".join([*self._lines, line]))
        self._lines.append(line)
