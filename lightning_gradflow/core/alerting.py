"""What happens to an alert: cooldown, counting and the action it calls for.

Detectors may see a condition on many consecutive steps. The :class:`AlertManager` counts every
occurrence but announces a condition (a kind plus its ``details["variant"]``, or its layers) at
most once per ``cooldown_steps``, and maps each announced alert to an action: ``"warn"``,
``"stop"`` (end training on every rank) or ``"raise"`` (:class:`GradientPathologyError`).

Example:
    >>> from lightning_gradflow.core.alerts import Alert
    >>> manager = AlertManager(on_alert="warn", actions={"nonfinite": "raise"}, cooldown_steps=10)
    >>> def nan_at(step):
    ...     return Alert("nonfinite", "critical", step, 0, ("fc",), 1.0, 0.0, "NaN", "fix it")
    >>> [a.step for a in manager.submit([nan_at(1)]) + manager.submit([nan_at(2)])]
    [1]
    >>> manager.counts["nonfinite"], manager.action(manager.announced)
    (2, 'raise')
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from lightning_gradflow.core.alerts import ACTIONS, Action, Alert
from lightning_gradflow.core.detector import alert_kinds
from lightning_gradflow.core.validation import check_choice, fail

_RANK = {"warn": 0, "stop": 1, "raise": 2}


class AlertManager:
    """Counts alerts, applies the cooldown and decides the action.

    Args:
        on_alert: the action for every kind without an override.
        actions: per-kind overrides, e.g. ``{"nonfinite": "raise"}``.
        cooldown_steps: minimum number of steps between two announcements of one condition.

    Raises:
        ValueError: for an unknown action or kind, or a negative cooldown.
    """

    def __init__(
        self,
        on_alert: Action = "warn",
        actions: Mapping[str, Action] | None = None,
        cooldown_steps: int = 100,
    ) -> None:
        check_choice("on_alert", on_alert, ACTIONS)
        if not isinstance(actions, Mapping | None):
            fail("actions", actions, "a mapping of alert kind to action, or None")
        actions = dict(actions or {})
        kinds = alert_kinds()
        for kind, action in actions.items():
            if kind not in kinds:
                raise ValueError(f"actions key {kind!r} is not an alert kind; allowed: {kinds}")
            check_choice(f"actions[{kind!r}]", action, ACTIONS)
        if (
            isinstance(cooldown_steps, bool)
            or not isinstance(cooldown_steps, int)
            or cooldown_steps < 0
        ):
            fail("cooldown_steps", cooldown_steps, "an integer >= 0")
        self.on_alert = on_alert
        self.actions = actions
        self.cooldown_steps = cooldown_steps
        self.counts: Counter[str] = Counter()
        self.announced: list[Alert] = []
        self._last_announced: dict[str, int] = {}

    @staticmethod
    def condition(alert: Alert) -> str:
        """The cooldown key: kind plus variant (or layers)."""
        variant = (alert.details or {}).get("variant") or ",".join(alert.layers)
        return f"{alert.kind}:{variant}"

    def submit(self, alerts: Iterable[Alert]) -> list[Alert]:
        """Count ``alerts``; return those to announce now (not within a cooldown)."""
        fresh = []
        for alert in alerts:
            self.counts[alert.kind] += 1
            key = self.condition(alert)
            last = self._last_announced.get(key)
            if last is not None and alert.step - last < self.cooldown_steps:
                continue
            self._last_announced[key] = alert.step
            self.announced.append(alert)
            fresh.append(alert)
        return fresh

    @property
    def announced_counts(self) -> Counter[str]:
        """Alerts announced per kind (``counts`` holds every occurrence, announced or not)."""
        return Counter(alert.kind for alert in self.announced)

    def action_of(self, alert: Alert) -> Action:
        return self.actions.get(alert.kind, self.on_alert)

    def action(self, alerts: Iterable[Alert]) -> Action:
        """The strongest action the alerts call for (``raise`` > ``stop`` > ``warn``)."""
        return max((self.action_of(a) for a in alerts), key=_RANK.__getitem__, default="warn")

    @property
    def may_interrupt(self) -> bool:
        """Whether any kind can stop or raise (else no cross-rank decision is needed)."""
        return self.on_alert != "warn" or any(a != "warn" for a in self.actions.values())

    def state_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "announced": [a.to_dict() for a in self.announced],
            "last_announced": dict(self._last_announced),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = Counter(state["counts"])
        self.announced = [Alert.from_dict(a) for a in state["announced"]]
        self._last_announced = dict(state["last_announced"])
