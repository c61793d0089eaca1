"""One shape for every detector, and the registry every list of alert kinds is derived from.

A detector is a class with a unique ``kind`` (the alert kind it reports), a ``hint`` (the usual
fix, in a sentence) and an ``order`` (its place among the kinds of its family). Defining the
class registers it: the kinds the monitor knows (:data:`~lightning_gradflow.ALERT_KINDS`,
:class:`~lightning_gradflow.AlertKind`, the names ``disable`` and ``actions`` accept, the
detectors the engine runs) are read from the registry, never restated. Each family has its own
base, which says what its detectors are fed:

=========================  =====================================================
base                       fed, per call of ``update``
=========================  =====================================================
``GradientDetector``       a ``StepRecord``, every optimizer step
                           (:mod:`lightning_gradflow.core.detectors.base`)
``ProbeDetector``          ``ProbeStats``, every probe step
                           (:mod:`lightning_gradflow.core.probes.detectors`)
=========================  =====================================================

Built-in detectors live in the packages :mod:`lightning_gradflow.core.detectors` and
:mod:`lightning_gradflow.core.probes`, which import every module they hold: a new file there is
picked up without being listed anywhere. A detector defined elsewhere (a test, a user's own
module) is registered when its class statement runs; :func:`unregister` or
:func:`restoring_registry` take it out again.

Example:
    >>> from lightning_gradflow.core.detectors.base import GradientDetector
    >>> with restoring_registry():
    ...     class LossAboveTen(GradientDetector):
    ...         '''The loss is above 10.'''
    ...         kind = "loss_above_ten"
    ...         hint = "Look at the loss."
    ...         def update(self, record, ctx):
    ...             if record.loss is None or record.loss <= 10:
    ...                 return []
    ...             return [self.alert(record.step, ctx.epoch, (), record.loss, 10.0,
    ...                                f"loss {record.loss:g} > 10", variant="above")]
    ...     "loss_above_ten" in alert_kinds("gradient")
    True
    >>> "loss_above_ten" in alert_kinds()
    False
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from lightning_gradflow.core.alerts import Alert, Severity

FAMILIES: tuple[str, ...] = ("gradient", "probe")
_BUILTIN_PACKAGES = ("lightning_gradflow.core.detectors", "lightning_gradflow.core.probes")
_KIND = re.compile(r"[a-z][a-z0-9_]*\Z")

_registry: dict[str, type[Detector]] = {}
_kinds: dict[str | None, tuple[str, ...]] = {}
_enum: tuple[tuple[str, ...], type[enum.Enum]] | None = None
_loaded = False


class Detector:
    """The base of every detector: one alert kind, its usual fix, an :meth:`alert` helper.

    Subclass a family's base (gradient or probe) and set, as class attributes:

    * ``kind``: the alert kind, ``lower_snake_case``, unique across families;
    * ``hint``: the usual fix, one or two sentences (shown after every alert);
    * ``hints`` (optional): per-variant hints, looked up with ``details["variant"]``;
    * ``order`` (optional): the detector's place among its family's kinds (lists, the order
      of one step's alerts); built-ins use 10, 20, ...; the default puts it after them.

    The class docstring's first line documents the kind (it is the
    :class:`~lightning_gradflow.AlertKind` member's docstring). ``state_dict`` and
    ``load_state_dict`` save nothing by default: override them if the detector keeps windows
    or counters, with JSON-serialisable values.

    Args:
        config: the family's thresholds (``DetectorConfig`` or ``ProbeConfig``).
    """

    kind: ClassVar[str]
    hint: ClassVar[str]
    hints: ClassVar[Mapping[str, str]] = {}
    family: ClassVar[str]
    order: ClassVar[float] = 1000.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            register(cls)

    def __init__(self, config: Any) -> None:
        self.config = config

    def alert(
        self,
        step: int,
        epoch: int | None,
        layers: Sequence[str],
        value: float,
        threshold: float,
        message: str,
        severity: Severity = "warning",
        **details: Any,
    ) -> Alert:
        """An :class:`~lightning_gradflow.core.alerts.Alert` of this detector's kind.

        The hint is ``hints[details["variant"]]`` if there is one, else ``hint``; ``details``
        are the keyword arguments left (``None`` if there are none).
        """
        hint = self.hints.get(details.get("variant"), self.hint)
        return Alert(
            kind=self.kind,
            severity=severity,
            step=step,
            epoch=epoch,
            layers=tuple(layers),
            value=float(value),
            threshold=float(threshold),
            message=message,
            hint=hint,
            details=details or None,
        )

    def state_dict(self) -> dict[str, Any]:
        """Windows and counters, JSON-serialisable (nothing by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def register(cls: type[Detector]) -> type[Detector]:
    """Add a detector class to the registry (its class statement does this already).

    Raises:
        ValueError: for a malformed kind, a missing hint or family, or a kind another class
            already registered.
    """
    kind = cls.__dict__.get("kind")
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ValueError(f"{cls.__qualname__}.kind={kind!r}: expected a lower_snake_case name")
    if getattr(cls, "family", None) not in FAMILIES:
        raise ValueError(
            f"{cls.__qualname__} has no family: subclass GradientDetector or ProbeDetector"
        )
    hint = getattr(cls, "hint", None)
    if not isinstance(hint, str) or not hint.strip():
        raise ValueError(f"{cls.__qualname__}.hint: expected the usual fix, in a sentence")
    known = _registry.get(kind)
    if known is not None and _name(known) != _name(cls):  # a module reloaded replaces its class
        raise ValueError(f"alert kind {kind!r} is already registered by {_name(known)}")
    _registry[kind] = cls
    _kinds.clear()
    return cls


def unregister(kind: str) -> None:
    """Remove the detector of ``kind`` from the registry (``KeyError`` if there is none)."""
    del _registry[kind]
    _kinds.clear()


@contextmanager
def restoring_registry() -> Iterator[None]:
    """Detectors registered (or unregistered) inside the block are undone when it ends.

    For tests: a detector class defined in the block exists, with its kind, only there.
    """
    _load_builtins()
    saved = dict(_registry)
    try:
        yield
    finally:
        _registry.clear()
        _registry.update(saved)
        _kinds.clear()


def detector_classes(family: str | None = None) -> tuple[type[Detector], ...]:
    """The registered detector classes (of one family), in the order of their kinds."""
    kinds = alert_kinds(family)
    return tuple(_registry[kind] for kind in kinds)


def alert_kinds(family: str | None = None) -> tuple[str, ...]:
    """The alert kinds, gradient ones then probe ones, each family by ``order``, then name.

    Args:
        family: ``"gradient"`` or ``"probe"`` for one family's kinds; ``None`` for all.
    """
    _load_builtins()
    if family not in _kinds:
        families = FAMILIES if family is None else (family,)
        _kinds[family] = tuple(
            kind
            for fam in families
            for kind in sorted(
                (k for k, cls in _registry.items() if cls.family == fam),
                key=lambda k: (_registry[k].order, k),
            )
        )
    return _kinds[family]


def alert_kind_enum() -> type[enum.Enum]:
    """``AlertKind``: a ``str`` Enum of the registered kinds (one class while they are the same).

    Members are named after the kind in upper case; each member's docstring is the first line
    of its detector's class docstring.
    """
    global _enum
    kinds = alert_kinds()
    if _enum is None or _enum[0] != kinds:
        members = [(kind.upper(), kind) for kind in kinds]
        cls = enum.Enum("AlertKind", members, type=str, module="lightning_gradflow.core.alerts")
        cls.__doc__ = "The alert kinds of the registered detectors (see ``ALERT_KINDS``)."
        for member in cls:
            doc = inspect.cleandoc(_registry[member.value].__doc__ or "")
            member.__doc__ = doc.split("\n\n")[0].replace("\n", " ") if doc else None
        _enum = (kinds, cls)
    return _enum[1]


def import_submodules(package: str, path: Sequence[str]) -> None:
    """Import every module of a package (so that each detector defined there registers)."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: the packages' own imports may ask for the kinds
    try:
        for package in _BUILTIN_PACKAGES:
            importlib.import_module(package)
    except BaseException:
        _loaded = False
        raise


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


__all__ = [
    "FAMILIES",
    "Detector",
    "alert_kind_enum",
    "alert_kinds",
    "detector_classes",
    "import_submodules",
    "register",
    "restoring_registry",
    "unregister",
]
