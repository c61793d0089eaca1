"""Every list of alert kinds is read from the registered detector classes: a detector defined
here (one class and its config fields) is known everywhere, and gone again afterwards."""

import importlib
import pickle
import sys
import warnings
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pytest
import torch
from torch import nn

import lightning_gradflow
from lightning_gradflow.core.alerting import AlertManager
from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.detector import (
    alert_kind_enum,
    alert_kinds,
    detector_classes,
    import_submodules,
    register,
    restoring_registry,
    unregister,
)
from lightning_gradflow.core.detectors import DetectorConfig, GradientDetector, GradientDetectors
from lightning_gradflow.core.probes import ProbeConfig, ProbeDetector, ProbeDetectors, ProbeStats
from lightning_gradflow.engine import GradFlowEngine
from lightning_gradflow.loop import GradFlow

FIRST_KINDS = (  # the kinds before the registry: their order is kept
    "vanishing",
    "exploding",
    "nonfinite",
    "always_clipping",
    "loss_spike",
    "dead_relu",
    "saturation",
    "attention_collapse",
    "rank_collapse",
)


def test_the_kind_lists_are_the_registered_classes():
    from lightning_gradflow.core.detectors import GRADIENT_KINDS
    from lightning_gradflow.core.probes import PROBE_ALERT_KINDS
    from lightning_gradflow.core.probes.detectors import PROBE_ALERT_KINDS as FROM_DETECTORS

    kinds = lightning_gradflow.ALERT_KINDS
    assert kinds == alert_kinds() == GRADIENT_KINDS + PROBE_ALERT_KINDS
    assert [k for k in kinds if k in FIRST_KINDS] == list(FIRST_KINDS)
    assert GRADIENT_KINDS[:5] == FIRST_KINDS[:5] and PROBE_ALERT_KINDS[:4] == FIRST_KINDS[5:]
    assert [k.value for k in lightning_gradflow.AlertKind] == list(kinds)
    assert lightning_gradflow.AlertKind.NONFINITE == "nonfinite"
    assert lightning_gradflow.AlertKind is lightning_gradflow.AlertKind  # built once
    assert GradFlowEngine().detector_kinds == list(kinds)
    assert [d.kind for d in GradientDetectors().detectors] == list(GRADIENT_KINDS)
    assert ProbeDetectors().kinds == PROBE_ALERT_KINDS == FROM_DETECTORS
    for cls in detector_classes():
        assert cls.hint.strip() and cls.__doc__.strip(), cls
        assert cls.family in ("gradient", "probe")


@dataclass(frozen=True)
class EchoConfig(DetectorConfig):
    """The config fields of the detector below: the DetectorConfig plus its own."""

    echo_loss_above: float = 1.0


def _define_echo():
    class LossAbove(GradientDetector):
        """The training loss is above a bound (a test detector)."""

        kind = "test_loss_above"
        hint = "It is a test."

        def update(self, record, ctx):
            bound = self.config.echo_loss_above
            if record.loss is None or not record.loss > bound:
                return []
            return [
                self.alert(
                    record.step, ctx.epoch, (), record.loss, bound,
                    f"loss {record.loss:.3g} > {bound:g}", variant="above",
                )
            ]  # fmt: skip

    return LossAbove


def _define_probe_echo():
    class AnyRelu(ProbeDetector):
        """A ReLU layer was probed (a test probe detector)."""

        kind = "test_any_relu"
        hint = "It is a probe test."
        streaks = ("test_any_relu",)

        def update(self, step, epoch, stats):
            names = self.persisting(self.kind, list(stats.dead_relu))
            if not names:
                return []
            return [self.alert(step, epoch, names, 1.0, 0.0, f"{names} probed", "critical")]

    return AnyRelu


def _train(steps=12, **settings):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monitor = GradFlow(
            net, log_every_n_steps=1, histogram_every_n_steps=None, plot_every_n_steps=None,
            **settings,
        )  # fmt: skip
        stopped_at = None
        for step in range(steps):
            loss = net(torch.randn(32, 4)).pow(2).mean() + 10.0 * (step >= 5)
            loss.backward()
            if monitor.step(optimizer, loss) and stopped_at is None:
                stopped_at = step
            optimizer.zero_grad()
        monitor.close()
    return monitor, stopped_at


def test_a_detector_defined_in_a_test_is_known_everywhere_and_only_there():
    built_in, gradient, probe = alert_kinds(), alert_kinds("gradient"), alert_kinds("probe")
    with restoring_registry():
        cls = _define_echo()
        _define_probe_echo()
        # known to every list, after the built-in kinds of its family
        expected = (*gradient, "test_loss_above", *probe, "test_any_relu")
        kinds = lightning_gradflow.ALERT_KINDS
        assert kinds == expected
        assert lightning_gradflow.AlertKind.TEST_LOSS_ABOVE.value == "test_loss_above"
        assert lightning_gradflow.AlertKind.TEST_LOSS_ABOVE.__doc__ == cls.__doc__
        assert alert_kinds("gradient")[-1] == "test_loss_above"
        assert alert_kinds("probe")[-1] == "test_any_relu"

        # fires through the engine, with its config field and a per-kind action
        monitor, stopped_at = _train(
            detectors=EchoConfig(echo_loss_above=5.0),
            actions={"test_loss_above": "stop"},
            probe_every_n_steps=1,
        )
        fired = [a for a in monitor.alerts if a.kind == "test_loss_above"]
        assert fired[0].step == 5 and stopped_at == 5
        assert fired[0].hint == "It is a test." and fired[0].details == {"variant": "above"}
        assert fired[0].threshold == 5.0 and fired[0].value > 10
        assert monitor.engine.alert_counts["test_loss_above"] == 7
        probed = [a for a in monitor.alerts if a.kind == "test_any_relu"]
        assert probed[0].layers == ("1",) and probed[0].step == 2  # probe patience 3
        assert "test_loss_above" in monitor.engine.detector_kinds

        # switched off by name
        monitor, stopped_at = _train(
            detectors=EchoConfig(echo_loss_above=5.0),
            actions={"test_loss_above": "stop"},
            disable=["test_loss_above", "test_any_relu"],
            probe_every_n_steps=1,
        )
        assert monitor.alerts == [] and stopped_at is None
        assert "test_loss_above" not in monitor.engine.detector_kinds

    # gone once the block ends
    assert alert_kinds() == built_in == lightning_gradflow.ALERT_KINDS
    assert not hasattr(lightning_gradflow.AlertKind, "TEST_LOSS_ABOVE")
    with pytest.raises(ValueError, match="holds unknown alert kinds"):
        GradFlowEngine(disable=["test_loss_above"])
    with pytest.raises(ValueError, match="'test_any_relu' is not an alert kind"):
        AlertManager(actions={"test_any_relu": "stop"})
    with pytest.raises(ValueError, match="kind='test_loss_above' is not allowed: expected one"):
        Alert("test_loss_above", "warning", 0, None, (), 1.0, 1.0, "m", "h")
    assert [d.kind for d in GradientDetectors(EchoConfig()).detectors] == list(gradient)


def test_unregister_and_the_checks_of_a_class_statement():
    with restoring_registry():
        cls = _define_echo()
        unregister("test_loss_above")
        assert "test_loss_above" not in lightning_gradflow.ALERT_KINDS
        register(cls)
        assert "test_loss_above" in lightning_gradflow.ALERT_KINDS
        with pytest.raises(ValueError, match=r"already registered by .*NonFiniteDetector"):

            class Twin(GradientDetector):
                kind = "nonfinite"
                hint = "A second detector of one kind."

        with pytest.raises(ValueError, match="lower_snake_case"):

            class Shouting(GradientDetector):
                kind = "Shouting"
                hint = "Kinds are lower_snake_case."

        with pytest.raises(ValueError, match="the usual fix"):

            class Mute(GradientDetector):
                kind = "mute"

        assert "mute" not in alert_kinds()
    assert "test_loss_above" not in alert_kinds()


def test_probe_streaks_saved_before_the_registry_still_load():
    stats = ProbeStats(kinds={"a": "relu"}, dead_relu={"a": 0.9}, relu_rows={"a": 64})
    detectors = ProbeDetectors(ProbeConfig(patience=3))
    detectors.load_state_dict({"streaks": {"dead_relu": {"a": 2}, "rank_depth": {}}})
    assert [a.kind for a in detectors.update(0, 0, stats)] == ["dead_relu"]
    assert detectors.state_dict()["dead_relu"] == {"streaks": {"dead_relu": {"a": 3}}}
    assert np.isfinite(detectors.update(1, 0, stats)[0].value)


@pytest.mark.parametrize(
    "module",
    [
        "lightning_gradflow.core.detectors",
        "lightning_gradflow.core.probes",
        "lightning_gradflow.core.probes.detectors",
    ],
)
def test_a_misspelt_kind_list_gets_pythons_usual_error(module):
    """The modules that derive their kind list on access still say what is missing, and where."""
    imported = importlib.import_module(module)
    with pytest.raises(AttributeError, match=f"module '{module}' has no attribute 'KINDS'"):
        imported.KINDS  # noqa: B018


def test_the_alert_kind_enum_is_a_documented_picklable_str_enum_of_alerts_module():
    kinds = alert_kind_enum()
    assert kinds.__name__ == "AlertKind" and kinds.__module__ == "lightning_gradflow.core.alerts"
    assert kinds.__doc__ == "The alert kinds of the registered detectors (see ``ALERT_KINDS``)."
    assert isinstance(kinds.VANISHING, str) and kinds.VANISHING == "vanishing"
    assert pickle.loads(pickle.dumps(kinds.EXPLODING)) is kinds.EXPLODING
    assert kinds.NONFINITE.__doc__ == "NaN or Inf in a gradient or in the loss."


def test_a_members_docstring_is_its_classes_first_paragraph_on_one_line():
    with restoring_registry():

        class Wordy(GradientDetector):
            """The loss is above ten,
            said on two lines.

            A second paragraph, left out."""

            kind = "test_wordy"
            hint = "It is a test."

        class Silent(GradientDetector):
            kind = "test_silent"
            hint = "It is a test."

        kinds = alert_kind_enum()
        assert kinds.TEST_WORDY.__doc__ == "The loss is above ten, said on two lines."
        assert kinds.TEST_SILENT.__doc__ is None
        assert alert_kind_enum() is kinds  # one class while the kinds are the same
    assert not hasattr(alert_kind_enum(), "TEST_WORDY")


def test_import_submodules_imports_every_module_of_the_package(tmp_path, monkeypatch):
    package = tmp_path / "my_detectors"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("first", "second"):
        (package / f"{name}.py").write_text(f"NAME = {name!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    imported = importlib.import_module("my_detectors")
    try:
        import_submodules("my_detectors", imported.__path__)
        assert sys.modules["my_detectors.first"].NAME == "first"
        assert sys.modules["my_detectors.second"].NAME == "second"
    finally:
        for name in ("my_detectors", "my_detectors.first", "my_detectors.second"):
            sys.modules.pop(name, None)


def test_a_detector_without_a_known_family_is_refused_by_name():
    from lightning_gradflow.core.detector import Detector

    with restoring_registry():
        with pytest.raises(ValueError) as caught:

            class Orphan(Detector):
                kind = "test_orphan"
                hint = "Subclass a family's base."

        assert str(caught.value) == (
            "test_a_detector_without_a_known_family_is_refused_by_name.<locals>.Orphan has no"
            " family: subclass GradientDetector or ProbeDetector"
        )
        with pytest.raises(ValueError, match="Stray has no family"):

            class Stray(GradientDetector):
                kind = "test_stray"
                hint = "Families are gradient and probe."
                family = "weights"

        assert "test_orphan" not in alert_kinds() and "test_stray" not in alert_kinds()


def test_an_alerts_hint_is_its_variants_or_else_the_detectors():
    with restoring_registry():

        class Hinted(GradientDetector):
            """A test detector with per-variant hints."""

            kind = "test_hinted"
            hint = "The general fix."
            hints = MappingProxyType({"slow": "The fix when it is slow."})

        detector = Hinted(DetectorConfig())
        slow = detector.alert(3, None, ["fc"], 2, 1, "slow", variant="slow", ratio=0.5)
        assert slow.hint == "The fix when it is slow." and slow.details == {
            "variant": "slow",
            "ratio": 0.5,
        }
        assert detector.alert(3, None, [], 2, 1, "m", variant="fast").hint == "The general fix."
        plain = detector.alert(3, 1, ("fc",), 2, 1, "m", "critical")
        assert plain.hint == "The general fix." and plain.details is None
        assert (plain.kind, plain.severity, plain.epoch, plain.layers) == (
            "test_hinted",
            "critical",
            1,
            ("fc",),
        )
        assert type(plain.value) is float and type(plain.threshold) is float


def test_a_failed_load_of_the_built_in_detectors_is_tried_again(monkeypatch):
    from lightning_gradflow.core import detector

    monkeypatch.setattr(detector, "_loaded", False)
    monkeypatch.setattr(detector, "_BUILTIN_PACKAGES", ("lightning_gradflow.no_such_package",))
    for _ in range(2):  # the second call imports again: it does not take the first as done
        with pytest.raises(ModuleNotFoundError, match="no_such_package"):
            detector._load_builtins()
