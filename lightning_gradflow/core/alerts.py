"""Alerts: what was seen, where, against which threshold, and the usual fix.

Every detector, gradient-based or activation-based, speaks the same :class:`Alert`. The set of
kinds is fixed (:class:`AlertKind`), so dashboards, filters and per-kind actions can rely on it.

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
from enum import Enum
from typing import Any, Literal, get_args

from lightning_gradflow.core.validation import check_choice

Severity = Literal["warning", "critical"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
Action = Literal["warn", "stop", "raise"]
ACTIONS: tuple[str, ...] = get_args(Action)


class AlertKind(str, Enum):
    """The documented set of pathologies an alert can name."""

    VANISHING = "vanishing"
    """Gradient norms fall by orders of magnitude towards the input, below a dead floor, or a
    layer's gradient stays exactly zero."""
    EXPLODING = "exploding"
    """A spike of the global norm, growth with depth, steady exponential growth over steps, or
    one update that rewrites a layer."""
    NONFINITE = "nonfinite"
    """NaN or Inf in a gradient or in the loss."""
    ALWAYS_CLIPPING = "always_clipping"
    """Gradient clipping is active on almost every step."""
    LOSS_SPIKE = "loss_spike"
    """The training loss jumps far above its recent level for several steps, or diverges."""
    DEAD_RELU = "dead_relu"
    """A large share of ReLU units output zero for every sample."""
    SATURATION = "saturation"
    """A large share of sigmoid/tanh activations sit in their flat tails."""
    ATTENTION_COLLAPSE = "attention_collapse"
    """Attention heads put almost all weight on one token (entropy collapse)."""
    RANK_COLLAPSE = "rank_collapse"
    """Token representations collapse towards rank one through the depth of a transformer."""


ALERT_KINDS: tuple[str, ...] = tuple(kind.value for kind in AlertKind)


@dataclass(frozen=True)
class Alert:
    """One gradient or activation pathology, seen at one step.

    Attributes:
        kind: one of :data:`ALERT_KINDS`.
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
        check_choice("kind", self.kind, ALERT_KINDS)
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
