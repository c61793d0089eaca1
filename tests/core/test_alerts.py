"""Alert: its one-line form, its dict form and back, the kinds and severities it accepts."""

from __future__ import annotations

import json

import pytest

from lightning_gradflow.core import alerts
from lightning_gradflow.core.alerts import Alert, GradientPathologyError
from lightning_gradflow.core.detector import alert_kind_enum, alert_kinds


def _alert(**changes: object) -> Alert:
    fields = dict(
        kind="exploding",
        severity="critical",
        step=41,
        epoch=2,
        layers=("rnn", "head"),
        value=1e4,
        threshold=1e3,
        message="total norm 1e+04 > 1e+03",
        hint="Clip the gradient norm.",
        details={"variant": "spike", "ratio": 10.0},
    )
    return Alert(**{**fields, **changes})


def test_format_is_one_line_with_kind_severity_step_message_and_hint():
    assert _alert().format() == (
        "[gradflow exploding/critical @ step 41] total norm 1e+04 > 1e+03 — Clip the gradient norm."
    )


def test_to_dict_gives_every_field_with_the_layers_as_a_list():
    assert _alert().to_dict() == {
        "kind": "exploding",
        "severity": "critical",
        "step": 41,
        "epoch": 2,
        "layers": ["rnn", "head"],
        "value": 1e4,
        "threshold": 1e3,
        "message": "total norm 1e+04 > 1e+03",
        "hint": "Clip the gradient norm.",
        "details": {"variant": "spike", "ratio": 10.0},
    }


@pytest.mark.parametrize("changes", [{}, {"epoch": None, "details": None, "layers": ()}])
def test_from_dict_inverts_to_dict_through_json(changes):
    alert = _alert(**changes)
    back = Alert.from_dict(json.loads(json.dumps(alert.to_dict())))
    assert back == alert and isinstance(back.layers, tuple)


def test_kind_and_severity_are_checked():
    with pytest.raises(ValueError) as caught:
        _alert(kind="exploded")
    assert str(caught.value) == (
        f"kind='exploded' is not allowed: expected one of {list(alert_kinds())}"
    )
    with pytest.raises(ValueError) as caught:
        _alert(severity="error")
    assert str(caught.value) == (
        "severity='error' is not allowed: expected one of ['warning', 'critical']"
    )
    for kind in alert_kinds():
        for severity in ("warning", "critical"):
            assert _alert(kind=kind, severity=severity).kind == kind


def test_the_error_raised_for_alerts_lists_each_on_its_own_line():
    first, second = _alert(), _alert(kind="nonfinite", step=42, severity="warning")
    error = GradientPathologyError([first, second])
    assert isinstance(error, RuntimeError) and error.alerts == [first, second]
    assert str(error) == f"{first.format()}\n{second.format()}"


def test_the_kind_lists_are_read_from_the_registry():
    assert alert_kinds() == alerts.ALERT_KINDS and "vanishing" in alerts.ALERT_KINDS
    assert alerts.AlertKind is alert_kind_enum()
    assert alerts.AlertKind.VANISHING.value == "vanishing"
    with pytest.raises(AttributeError) as caught:
        alerts.ALERT_KIND  # noqa: B018
    assert (
        str(caught.value) == "module 'lightning_gradflow.core.alerts' has no attribute 'ALERT_KIND'"
    )
