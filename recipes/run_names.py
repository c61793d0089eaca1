"""Name a run after its overrides: ``model=resnet,model.net.depth=20``.

The same name is the TensorBoard and CSV sub-folder, the W&B run name, ``run_name`` in
``metrics.json`` and the row of ``comparison.md``.

What goes into the name:

- In a multirun, the overrides of the keys the sweep varies: the sweeper's ``params`` (an
  experiment's sweep) and every command-line override with several values (``model=a,b``),
  read from the sweep's ``multirun.yaml``; a single command-line value for a swept key
  (``experiment=vanishing_depth model.net.depth=20``) ends its sweep. The overrides all jobs
  share are W&B tags only.
- Otherwise (a single run, or a sweep with one value per key) every override except the ones
  that say where and how a run logs rather than what it trains: ``hydra.*``, ``paths.*``,
  ``experiment=`` (the group), ``logger=``, ``num_threads=`` and ``seed=`` (runs that differ
  only in their seed are one configuration; a swept seed is named, see above).
- No override left: the model's name (``mlp_vanilla``).

``/`` in a value becomes ``_`` (the name is a folder); a name over 120 characters is cut and
ends with a short hash of the whole.

Example:
    >>> run_name(["experiment=vanishing_depth", "model=resnet", "model.net.depth=20"], "resnet")
    'model=resnet,model.net.depth=20'
    >>> run_name(["logger=many", "seed=3"], "lstm")
    'lstm'
    >>> run_name(["model=lstm", "seed=1", "trainer.max_epochs=2"], "lstm", swept={"seed"})
    'seed=1'
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hydra.core.override_parser.overrides_parser import OverridesParser

# keys that never name a run (where it writes, how it logs), unless the sweep varies them
UNNAMED = ("hydra", "paths", "experiment", "logger", "num_threads", "seed")
MAX_CHARS = 120
MAX_TAG_CHARS = 64  # W&B refuses longer tags
MULTIRUN_FILE = "multirun.yaml"  # Hydra's record of the sweep, in the sweep directory


class JobNames(NamedTuple):
    """What a job is called: ``name`` (run), ``group`` (sweep) and W&B ``tags``."""

    name: str
    group: str
    tags: list[str]


def override_key(override: str) -> str:
    """The config key or group of an override, without ``+``/``++``/``~`` or ``@package``.

    Example:
        >>> override_key("+callbacks.gradflow.detectors.patience=5"), override_key("model=lstm")
        ('callbacks.gradflow.detectors.patience', 'model')
    """
    return OverridesParser.create().parse_override(override).key_or_group


def _unnamed(key: str) -> bool:
    return key.split(".", 1)[0] in UNNAMED or key.startswith("hydra/")


def named_overrides(overrides: Sequence[str], swept: Collection[str] = ()) -> list[str]:
    """The overrides that name a run: those of ``swept`` keys, else every named one."""
    keyed = [(override_key(o), o) for o in overrides]
    chosen = [o for key, o in keyed if key in swept and not key.startswith("hydra.")]
    return chosen or [o for key, o in keyed if not _unnamed(key)]


def run_name(overrides: Sequence[str], model: str, swept: Collection[str] = ()) -> str:
    """The run's name from its overrides (see the module doc), ``model`` if none names it."""
    name = ",".join(named_overrides(overrides, swept)).replace("/", "_") or model
    if len(name) <= MAX_CHARS:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_CHARS - 9]}~{digest}"


def run_tags(overrides: Sequence[str], model: str) -> list[str]:
    """W&B tags: the model and every override that could name a run (cut to 64 characters).

    Example:
        >>> run_tags(["logger=many", "model=resnet", "model.net.depth=20"], "resnet")
        ['resnet', 'model=resnet', 'model.net.depth=20']
    """
    tags = [model, *(o for o in overrides if not _unnamed(override_key(o)))]
    return list(dict.fromkeys(t[:MAX_TAG_CHARS] for t in tags))


def swept_keys(sweep_dir: str | Path, sweeper_params: Mapping[str, Any] | None = None) -> set[str]:
    """Keys a sweep varies: ``sweeper_params`` entries with several values, updated by the
    command line recorded in ``<sweep_dir>/multirun.yaml`` (a sweep there adds its key, a
    single value there takes it out, as the basic sweeper does; no file: the params alone).

    Example:
        >>> sorted(swept_keys("/nowhere", {"model": "lstm,resnet", "model.net.depth": 20}))
        ['model']
    """
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    params = [f"{k}={v}" for k, v in (sweeper_params or {}).items()]
    overrides = parser.parse_overrides(params)
    path = Path(sweep_dir) / MULTIRUN_FILE
    if path.is_file():
        overrides += parser.parse_overrides(list(OmegaConf.load(path).hydra.overrides.task))
    keys: set[str] = set()
    for override in overrides:
        if override.is_sweep_override():
            keys.add(override.key_or_group)
        else:
            keys.discard(override.key_or_group)
    return keys
