"""Alerts: what was seen, where, against which threshold, and the usual fix.

Every detector, gradient-based or activation-based, speaks the same :class:`Alert`. The kinds
are those of the registered detectors (:mod:`~lightning_gradflow.core.detector`): ``ALERT_KINDS``
(a tuple) and ``AlertKind`` (a ``str`` Enum) are derived from the registry when they are read,
so dashboards, filters and per-kind actions can rely on them.

Example:
    >>> alert = Alert(
    ...     kind="vanishing", severity="warning", step=12, epoch=0, layers=("net.0",),
    ...     value=3e-9, threshold=1e-5, message="net.0 gradient norm 3e-09 < 1e-05",
    ...     hint="Use ReLU with He init, normalisation or residual connections.")
    >>> alert.format()
    '[gradflow vanishing/warning @ step 12] net.0 gradient norm 3e-09 < 1e-05 — Use ReLU with He init, normalisation or residual connections.'
"""  # noqa: E501

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from lightning_gradflow.core.validation import check_choice

Severity = Literal["warning", "critical"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
Action = Literal["warn", "stop", "raise"]
ACTIONS: tuple[str, ...] = get_args(Action)


@dataclass(frozen=True)
class Alert:
    """One gradient or activation pathology, seen at one step.

    Attributes:
        kind: one of ``ALERT_KINDS``.
        severity: ``"warning"`` or ``"critical"``.
        step: the optimizer step at which it was seen.
        epoch: the epoch, if known.
        layers: the layers concerned, in depth order (input first).
        value: the measured quantity (a norm, a ratio, a share, ...).
        threshold: the bound it crossed.
        message: one line a person understands: what was seen and where.
        hint: the usual fix, in a sentence.
        details: extra numbers (e.g. ``gamma``, ``variant``), JSON-serialisable.
    """

    kind: str
    severity: Severity
    step: int
    epoch: int | None
    layers: tuple[str, ...]
    value: float
    threshold: float
    message: str
    hint: str
    details: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, _alert_kinds())
        check_choice("severity", self.severity, SEVERITIES)

    def format(self) -> str:
        """A single line for the console and text logs."""
        head = f"[gradflow {self.kind}/{self.severity} @ step {self.step}]"
        return f"{head} {self.message} — {self.hint}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (layers as a list)."""
        data = asdict(self)
        data["layers"] = list(self.layers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "layers": tuple(data["layers"])})


class GradientPathologyError(RuntimeError):
    """Raised (on every rank) when an alert's action is ``"raise"``.

    Attributes:
        alerts: the alerts that triggered it.
    """

    def __init__(self, alerts: list[Alert]) -> None:
        self.alerts = alerts
        super().__init__("\n".join(alert.format() for alert in alerts))


def _alert_kinds() -> tuple[str, ...]:
    from lightning_gradflow.core.detector import alert_kinds  # the registry imports this module

    return alert_kinds()


def __getattr__(name: str) -> Any:
    """``ALERT_KINDS`` and ``AlertKind``, derived from the detector registry when read."""
    if name == "ALERT_KINDS":
        return _alert_kinds()
    if name == "AlertKind":
        from lightning_gradflow.core.detector import alert_kind_enum

        return alert_kind_enum()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
