"""Read back what an offline W&B run wrote to its ``run-<id>.wandb`` transaction log.

wandb 0.31 no longer ships a Python reader for this file (the old
``wandb.sdk.internal.datastore.DataStore`` is gone; ``wandb-core`` writes and syncs it),
so this module contains a small reader for its format:

* a 7-byte file header ``<4sHB``: ``b":W&B"``, magic ``0xBEE1``, version ``0``;
* then a LevelDB-style log: 32 KiB blocks of chunks, each with a 7-byte header
  ``<IHB`` (CRC32, length, type FULL/FIRST/MIDDLE/LAST) followed by the payload; a block
  tail shorter than a header is zero padding. The CRC is ``zlib.crc32(payload,
  zlib.crc32(bytes([type])))``;
* each reassembled payload is a serialised ``wandb_internal_pb2.Record``.

History rows come back *flattened*: ``wandb-core`` splits every logged dict-like value
(nested dicts, histograms, images, ...) into one item per leaf with a ``nested_key`` path,
so ``run.log({"h": wandb.Histogram(...)})`` yields ``h/_type``, ``h/values`` and ``h/bins``.
:func:`histograms` and :func:`images` regroup those leaves into the original JSON objects.

``run.finish()`` returns before ``wandb-core`` flushes the file; use :func:`finish_wandb`
(finish + ``wandb.teardown()``) or :func:`read_finished_records` (polls for the ``exit``
record) before reading.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

__all__ = [
    "KEY_SEP",
    "WandbLogFormatError",
    "alerts",
    "find_wandb_file",
    "finish_wandb",
    "histograms",
    "history_rows",
    "images",
    "iter_records",
    "media_objects",
    "offline_wandb_env",
    "read_finished_records",
    "read_records",
    "record_kind",
    "records_of_kind",
    "run_files_dir",
    "summary",
    "unflatten",
]

KEY_SEP = "/"
"""Separator used to join ``nested_key`` paths into flat row keys."""

_FILE_HEADER = struct.Struct("<4sHB")
_FILE_IDENT = b":W&B"
_FILE_MAGIC = 0xBEE1
_FILE_VERSION = 0
_CHUNK_HEADER = struct.Struct("<IHB")
_BLOCK_LEN = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_CHUNK_CRC_SEED = {t: zlib.crc32(bytes([t])) for t in (_FULL, _FIRST, _MIDDLE, _LAST)}


class WandbLogFormatError(ValueError):
    """The file is not a (complete) W&B transaction log."""


def offline_wandb_env(monkeypatch: Any, root: Path) -> Path:
    """Point every W&B directory at ``root`` and force silent offline mode.

    ``monkeypatch`` is pytest's fixture; everything is undone at test teardown (including
    ``WANDB_MODE``, which ``WandbLogger(offline=True)`` overwrites process-wide).
    Returns ``root``, to be passed as ``dir=``/``save_dir=``.
    """
    root.mkdir(parents=True, exist_ok=True)
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(root),
        "WANDB_CONFIG_DIR": str(root / "config"),
        "WANDB_CACHE_DIR": str(root / "cache"),
        "WANDB_DATA_DIR": str(root / "data"),
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_ERROR_REPORTING": "false",  # no Sentry reports from the SDK
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(key, raising=False)
    return root


def finish_wandb(run: Any = None) -> None:
    """Finish ``run`` (default: the active run) and shut down the ``wandb-core`` service.

    ``run.finish()`` / ``wandb.finish()`` return *before* ``wandb-core`` has flushed and
    closed the ``.wandb`` file (the close request is fire-and-forget), so reading right
    after them races: the file may still be just its 7-byte header. ``wandb.teardown()``
    is processed after that close on the same connection and waits for the service
    process to exit, so the file is complete when this returns. The next
    ``wandb.init`` starts a fresh service (about 0.3 s).
    """
    import wandb

    if run is not None:
        run.finish()
    elif wandb.run is not None:
        wandb.finish()
    wandb.teardown()


def find_wandb_file(root: Path | str) -> Path:
    """Return the single ``run-*.wandb`` file below ``root`` (searched recursively)."""
    root = Path(root)
    found = sorted(root.rglob("run-*.wandb"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(
            f"no run-*.wandb file under {root}; was wandb.init(dir=...) pointed elsewhere?"
        )
    listing = "\n  ".join(str(p) for p in found)
    raise FileExistsError(
        f"expected one run-*.wandb under {root}, found {len(found)}:\n  {listing}"
    )


def run_files_dir(wandb_file: Path | str) -> Path:
    """The run's ``files/`` directory, against which media ``path`` values are relative."""
    return Path(wandb_file).parent / "files"


def _iter_payloads(data: bytes, *, verify_crc: bool, name: str) -> Iterator[bytes]:
    if len(data) < _FILE_HEADER.size:
        raise WandbLogFormatError(f"{name}: too short for a W&B header ({len(data)} bytes)")
    ident, magic, version = _FILE_HEADER.unpack_from(data, 0)
    if ident != _FILE_IDENT or magic != _FILE_MAGIC or version != _FILE_VERSION:
        raise WandbLogFormatError(
            f"{name}: bad header ident={ident!r} magic={magic:#x} version={version}"
        )
    pos = _FILE_HEADER.size
    pending: bytearray | None = None
    while pos < len(data):
        block_left = _BLOCK_LEN - pos % _BLOCK_LEN
        if block_left < _CHUNK_HEADER.size:  # zero padding at the end of a block
            pos += block_left
            continue
        if pos + _CHUNK_HEADER.size > len(data):
            raise WandbLogFormatError(f"{name}: truncated chunk header at offset {pos}")
        crc, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        if crc == 0 and length == 0 and kind == 0:  # preallocated / zeroed tail of a block
            pos += block_left
            continue
        start = pos + _CHUNK_HEADER.size
        end = start + length
        if end > len(data) or length > block_left - _CHUNK_HEADER.size:
            raise WandbLogFormatError(
                f"{name}: truncated chunk at offset {pos} (len {length}); "
                "was the run finished (run.finish()/wandb.finish()) before reading?"
            )
        chunk = data[start:end]
        if kind not in _CHUNK_CRC_SEED:
            raise WandbLogFormatError(f"{name}: unknown chunk type {kind} at offset {pos}")
        if verify_crc and zlib.crc32(chunk, _CHUNK_CRC_SEED[kind]) != crc:
            raise WandbLogFormatError(f"{name}: CRC mismatch in chunk at offset {pos}")
        pos = end
        if kind == _FULL:
            if pending is not None:
                raise WandbLogFormatError(f"{name}: FULL chunk inside a fragmented record")
            yield chunk
        elif kind == _FIRST:
            if pending is not None:
                raise WandbLogFormatError(f"{name}: FIRST chunk inside a fragmented record")
            pending = bytearray(chunk)
        else:
            if pending is None:
                raise WandbLogFormatError(f"{name}: MIDDLE/LAST chunk without a FIRST chunk")
            pending += chunk
            if kind == _LAST:
                yield bytes(pending)
                pending = None
    if pending is not None:
        raise WandbLogFormatError(f"{name}: file ends inside a fragmented record")


def iter_records(
    path: Path | str, *, verify_crc: bool = True
) -> Iterator[wandb_internal_pb2.Record]:
    """Yield every ``Record`` stored in a ``.wandb`` file, in write order."""
    path = Path(path)
    for payload in _iter_payloads(path.read_bytes(), verify_crc=verify_crc, name=str(path)):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def read_records(path: Path | str, *, verify_crc: bool = True) -> list[wandb_internal_pb2.Record]:
    """All ``Record`` messages of a ``.wandb`` file (read after the run has finished)."""
    return list(iter_records(path, verify_crc=verify_crc))


def read_finished_records(
    root: Path | str, *, timeout: float = 10.0
) -> list[wandb_internal_pb2.Record]:
    """Records of the single run below ``root``, once its file is complete.

    Polls until the file parses and holds the run's ``exit`` record (the last record
    an offline run writes), so it also works without :func:`finish_wandb`'s teardown.
    """
    deadline = time.monotonic() + timeout
    while True:
        problem: Exception | None = None
        try:
            records = read_records(find_wandb_file(root))
        except (FileNotFoundError, WandbLogFormatError) as exc:
            problem = exc
        else:
            if any(record_kind(r) == "exit" for r in records):
                return records
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"no complete run-*.wandb (with an exit record) under {root} after "
                f"{timeout}s; finish the run first (finish_wandb). Last problem: {problem}"
            )
        time.sleep(0.05)


def record_kind(record: wandb_internal_pb2.Record) -> str | None:
    """The ``record_type`` oneof name: ``"history"``, ``"alert"``, ``"summary"``, ..."""
    return record.WhichOneof("record_type")


def records_of_kind(records: Iterable[wandb_internal_pb2.Record], kind: str) -> list[Any]:
    """The payload messages (e.g. ``AlertRecord``) of all records of ``kind``."""
    return [getattr(r, kind) for r in records if record_kind(r) == kind]


def _item_key(item: Any) -> str:
    return KEY_SEP.join(item.nested_key) if item.nested_key else item.key


def _item_value(item: Any) -> Any:
    """Decode a ``HistoryItem``/``SummaryItem`` value (JSON form, else the typed form)."""
    if item.value_json:
        return json.loads(item.value_json)
    which = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    if which is None or which == "none":
        return None
    if which == "json":
        return json.loads(item.json)
    return getattr(item, which)


def history_rows(records: Iterable[wandb_internal_pb2.Record]) -> list[dict[str, Any]]:
    """One flat ``{key: value}`` dict per history record (i.e. per committed step).

    Keys are ``nested_key`` paths joined by ``"/"`` (so a logged ``"train/loss"`` and a
    logged ``{"train": {"loss": ...}}`` look the same); values are JSON-decoded. Rows
    include wandb's own ``_step``, ``_runtime`` and ``_timestamp``.
    """
    return [
        {_item_key(item): _item_value(item) for item in r.history.item}
        for r in records
        if record_kind(r) == "history"
    ]


def summary(records: Iterable[wandb_internal_pb2.Record]) -> dict[str, Any]:
    """The final run summary, replaying every summary update/remove (flat keys as above)."""
    result: dict[str, Any] = {}
    for r in records:
        if record_kind(r) != "summary":
            continue
        for item in r.summary.update:
            result[_item_key(item)] = _item_value(item)
        for item in r.summary.remove:
            prefix = _item_key(item)
            for key in [k for k in result if k == prefix or k.startswith(prefix + KEY_SEP)]:
                del result[key]
    return result


def alerts(records: Iterable[wandb_internal_pb2.Record]) -> list[dict[str, Any]]:
    """``run.alert(...)`` calls as ``{"title", "text", "level", "wait_duration"}`` dicts.

    ``level`` is the ``wandb.AlertLevel`` value string (``"INFO"``/``"WARN"``/``"ERROR"``);
    ``wait_duration`` is in milliseconds.
    """
    return [
        {
            "title": a.title,
            "text": a.text,
            "level": a.level,
            "wait_duration": a.wait_duration,
        }
        for a in records_of_kind(records, "alert")
    ]


def unflatten(row: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The sub-object stored under ``prefix`` in a flat row, e.g. ``{"_type": ..., ...}``."""
    lead = prefix + KEY_SEP
    return {k[len(lead) :]: v for k, v in row.items() if k.startswith(lead)}


def media_objects(row: Mapping[str, Any], type_name: str) -> dict[str, dict[str, Any]]:
    """All objects with ``"_type" == type_name`` in a flat history row, by logged key.

    Handles both the flattened form written by ``wandb-core`` (``key/_type``,
    ``key/...``) and a whole JSON object stored under one key.
    """
    found: dict[str, dict[str, Any]] = {}
    suffix = KEY_SEP + "_type"
    for key, value in row.items():
        if key.endswith(suffix) and value == type_name:
            name = key[: -len(suffix)]
            found[name] = unflatten(row, name)
        elif isinstance(value, dict) and value.get("_type") == type_name:
            found[key] = dict(value)
    return found


def histograms(row: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``wandb.Histogram`` values in a row: ``{key: {"_type": "histogram", "values",
    "bins"}}`` where ``values`` are the counts and ``bins`` the ``len(values) + 1`` edges.
    """
    return media_objects(row, "histogram")


def images(row: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``wandb.Image`` values in a row: ``{key: {"_type": "image-file", "path", "format",
    "width", "height", "sha256", "size", ...}}``; ``path`` is relative to
    :func:`run_files_dir`.
    """
    return media_objects(row, "image-file")
