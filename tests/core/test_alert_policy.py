"""The alert manager's policy on its own: settings refused with their name, the cooldown key,
cooldowns per condition within one batch of alerts, actions, and its checkpointed state."""

import json

import pytest

from lightning_gradflow.core.alerting import AlertManager
from lightning_gradflow.core.alerts import Alert


def alert(step, kind="vanishing", layers=("l0",), variant=None, severity="warning"):
    details = {"variant": variant} if variant else None
    return Alert(kind, severity, step, 0, tuple(layers), 1.0, 1.0, "m", "h", details)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"on_alert": "halt"}, "on_alert='halt' is not allowed"),
        (
            {"actions": ["stop"]},
            "actions=\\['stop'\\] is not allowed: "
            "expected a mapping of alert kind to action, or None",
        ),
        ({"actions": {"ghost": "warn"}}, "actions key 'ghost' is not an alert kind; allowed: "),
        ({"actions": {"nonfinite": "boom"}}, "actions\\['nonfinite'\\]='boom' is not allowed"),
        ({"cooldown_steps": -1}, "cooldown_steps=-1 is not allowed: expected an integer >= 0"),
        ({"cooldown_steps": 1.5}, "cooldown_steps=1.5 is not allowed"),
        ({"cooldown_steps": True}, "cooldown_steps=True is not allowed"),
    ],
)
def test_invalid_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AlertManager(**kwargs)


def test_default_cooldown_is_a_hundred_steps():
    manager = AlertManager()
    assert [a.step for s in (0, 99, 100) for a in manager.submit([alert(s)])] == [0, 100]


def test_zero_cooldown_announces_every_step():
    manager = AlertManager(cooldown_steps=0)
    assert [a.step for s in (0, 0, 1) for a in manager.submit([alert(s)])] == [0, 0, 1]


def test_condition_is_the_variant_or_else_the_layers():
    assert AlertManager.condition(alert(0, variant="floor", layers=("a", "b"))) == "vanishing:floor"
    assert AlertManager.condition(alert(0, layers=("a", "b"))) == "vanishing:a,b"
    assert AlertManager.condition(alert(0, kind="dead_relu", layers=())) == "dead_relu:"


def test_cooldown_is_per_condition_within_one_batch():
    manager = AlertManager(cooldown_steps=10)
    manager.submit([alert(0, layers=("a",))])
    batch = [alert(1, layers=("a",)), alert(1, layers=("b",)), alert(1, kind="exploding")]
    assert manager.submit(batch) == batch[1:]  # a is cooling down; b and exploding are new
    assert manager.counts == {"vanishing": 3, "exploding": 1}
    assert manager.announced == [alert(0, layers=("a",)), *batch[1:]]


def test_actions_and_interrupting():
    assert not AlertManager().may_interrupt
    assert AlertManager(on_alert="stop").may_interrupt
    manager = AlertManager(actions={"nonfinite": "raise", "exploding": "stop"})
    assert manager.may_interrupt
    assert manager.action_of(alert(0)) == "warn"
    assert manager.action([alert(0), alert(0, kind="exploding")]) == "stop"
    assert manager.action([alert(0, kind="nonfinite"), alert(0, kind="exploding")]) == "raise"
    assert manager.action([]) == "warn"


def test_state_round_trip_keeps_counts_announcements_and_cooldowns():
    manager = AlertManager(cooldown_steps=10)
    manager.submit([alert(0), alert(3), alert(4, kind="nonfinite", severity="critical")])
    restored = AlertManager(cooldown_steps=10)
    restored.load_state_dict(json.loads(json.dumps(manager.state_dict())))
    assert restored.counts == manager.counts == {"vanishing": 2, "nonfinite": 1}
    assert restored.announced == manager.announced
    assert restored.submit([alert(9)]) == [] and restored.submit([alert(10)]) == [alert(10)]
