"""Detectors of activation pathologies, fed one :class:`ProbeStats` per probe step.

Each kind is one :class:`ProbeDetector` subclass (registered by its class statement, see
:mod:`~lightning_gradflow.core.detector`); :class:`ProbeDetectors` runs the registered ones.
Every condition must hold on ``patience`` consecutive probe steps (3 by default) before it is
reported, and is reported again on each probe step while it holds (the alert manager's
cooldown decides what is announced). Per kind:

* ``dead_relu``: a ReLU layer seen on at least ``dead_relu_min_rows`` rows has more than
  ``dead_relu_threshold`` of its units dead; critical when ≥ 99 % are.
* ``saturation``: more than ``saturation_threshold`` of a sigmoid/tanh layer's activations
  sit in the flat tails; critical at ≥ 99 %. The output layer (the probed layer that ran last,
  with no module holding parameters after it, e.g. the sigmoid of a binary classifier) is left
  out: confident predictions are its job, and with a cross-entropy loss its own derivative
  cancels out of the gradient.
* ``attention_collapse``: at least ``attention_head_share`` of an attention layer's heads have
  a mean normalised entropy below ``attention_entropy_threshold``; the message names the
  heads; critical when every head of a layer collapsed.
* ``rank_collapse``, variant ``collapsed``: a block's effective rank is below
  ``rank_collapse_threshold`` (critical when within a fifth of the way from 1 to it); variant
  ``depth``: within one stack of ≥ 3 blocks (blocks sharing a parent, e.g. ``encoder.layers``)
  both the last/first effective rank and the ratio of a straight line fitted to log rank over
  block index fall below ``rank_decay_ratio``. Blocks with fewer than ``rank_min_tokens``
  tokens are not judged.

Example:
    >>> import numpy as np
    >>> from lightning_gradflow.core.probes.probe import ProbeStats
    >>> detectors = ProbeDetectors(ProbeConfig(patience=2))
    >>> stats = ProbeStats(kinds={"act": "relu"}, dead_relu={"act": 0.9}, relu_rows={"act": 64})
    >>> [len(detectors.update(step, 0, stats)) for step in range(3)]
    [0, 1, 1]
    >>> detectors.update(3, 0, stats)[0].message
    'act: 90% of units dead (zero on all 64 rows) for 2+ probe steps'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import numpy as np

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.detector import Detector, alert_kinds, detector_classes
from lightning_gradflow.core.flow import fit_depth_profile
from lightning_gradflow.core.probes.config import ProbeConfig
from lightning_gradflow.core.probes.probe import ProbeStats
from lightning_gradflow.core.validation import check_kinds

_EXTREME_SHARE = 0.99
_MAX_SHOWN = 5


def _shown(parts: list[str]) -> str:
    extra = len(parts) - _MAX_SHOWN
    return "; ".join(parts[:_MAX_SHOWN]) + (f"; +{extra} more" if extra > 0 else "")


class ProbeDetector(Detector):
    """A detector of one alert kind, fed the statistics of each probe step.

    Conditions are kept per layer (or stack) in streaks, one dict per condition named in
    ``streaks``; :meth:`persisting` advances them and returns those that lasted ``patience``
    probe steps. The streaks are its state.

    Args:
        config: the thresholds of the probes and their detectors (its own fields included).
    """

    family: ClassVar[str] = "probe"
    streaks: ClassVar[tuple[str, ...]] = ()
    config: ProbeConfig

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__(config)
        self._streaks: dict[str, dict[str, int]] = {name: {} for name in self.streaks}

    def update(self, step: int, epoch: int | None, stats: ProbeStats) -> list[Alert]:
        """Alerts seen at this probe step (empty if none)."""
        raise NotImplementedError

    def persisting(self, condition: str, hits: Iterable[str]) -> list[str]:
        """Advance the streaks of ``hits`` (all others reset); those that reached ``patience``."""
        old = self._streaks[condition]
        self._streaks[condition] = {key: old.get(key, 0) + 1 for key in hits}
        return [key for key, n in self._streaks[condition].items() if n >= self.config.patience]

    def state_dict(self) -> dict[str, Any]:
        """Per condition, the number of consecutive probe steps it has held, by layer."""
        return {"streaks": {name: dict(s) for name, s in self._streaks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for name in self.streaks:
            saved = state["streaks"].get(name, {})
            self._streaks[name] = {key: int(n) for key, n in saved.items()}


class _ShareDetector(ProbeDetector):
    """One alert for the layers whose share stayed above a threshold for ``patience``."""

    def share_alert(
        self,
        step: int,
        epoch: int | None,
        hits: list[str],
        shares: dict[str, float],
        threshold: float,
        describe: Callable[[str], str],
        detail_key: str,
    ) -> list[Alert]:
        names = self.persisting(self.kind, hits)
        if not names:
            return []
        worst = max(shares[n] for n in names)
        return [
            self.alert(
                step,
                epoch,
                names,
                worst,
                threshold,
                f"{_shown([describe(n) for n in names])} for {self.config.patience}+ probe steps",
                severity="critical" if worst >= _EXTREME_SHARE else "warning",
                **{detail_key: {n: shares[n] for n in names}},
            )
        ]


class DeadReluDetector(_ShareDetector):
    """A large share of ReLU units output zero for every sample."""

    kind = "dead_relu"
    hint = (
        "Initialise with He (Kaiming) init and zero biases, lower the learning rate, or use "
        "LeakyReLU/GELU so that silent units still get a gradient."
    )
    order = 10
    streaks = ("dead_relu",)

    def update(self, step: int, epoch: int | None, stats: ProbeStats) -> list[Alert]:
        cfg = self.config
        hits = [
            name
            for name, share in stats.dead_relu.items()
            if stats.relu_rows[name] >= cfg.dead_relu_min_rows and share > cfg.dead_relu_threshold
        ]
        return self.share_alert(
            step,
            epoch,
            hits,
            stats.dead_relu,
            cfg.dead_relu_threshold,
            lambda n: (
                f"{n}: {stats.dead_relu[n]:.0%} of units dead "
                f"(zero on all {stats.relu_rows[n]} rows)"
            ),
            "dead_share",
        )


class SaturationDetector(_ShareDetector):
    """A large share of sigmoid/tanh activations sit in their flat tails."""

    kind = "saturation"
    hint = (
        "Use Xavier/Glorot init, normalise the pre-activations (LayerNorm/BatchNorm), or use "
        "ReLU-family activations in hidden layers."
    )
    order = 20
    streaks = ("saturation",)

    def update(self, step: int, epoch: int | None, stats: ProbeStats) -> list[Alert]:
        cfg = self.config
        hits = [
            name
            for name, share in stats.saturation.items()
            if name not in stats.output_layers and share > cfg.saturation_threshold
        ]
        return self.share_alert(
            step,
            epoch,
            hits,
            stats.saturation,
            cfg.saturation_threshold,
            lambda n: f"{n} ({stats.kinds[n]}): {stats.saturation[n]:.0%} of activations saturated",
            "saturated_share",
        )


class AttentionCollapseDetector(ProbeDetector):
    """Attention heads put almost all weight on one token (entropy collapse)."""

    kind = "attention_collapse"
    hint = (
        "The attention logits are too large: check the 1/sqrt(head_dim) query-key scaling, add "
        "QK-norm, and warm up the learning rate."
    )
    order = 30
    streaks = ("attention_collapse",)

    def update(self, step: int, epoch: int | None, stats: ProbeStats) -> list[Alert]:
        cfg = self.config
        collapsed: dict[str, list[int]] = {}
        for name, entropy in stats.attention_entropy.items():
            judged = np.isfinite(entropy)
            heads = np.flatnonzero(judged & (entropy < cfg.attention_entropy_threshold))
            if judged.any() and heads.size >= cfg.attention_head_share * judged.sum():
                collapsed[name] = heads.tolist()
        names = self.persisting("attention_collapse", collapsed)
        if not names:
            return []
        lowest = min(float(np.nanmin(stats.attention_entropy[n])) for n in names)
        parts = []
        for n in names:
            heads, total = collapsed[n], stats.attention_entropy[n].size
            parts.append(
                f"{n} heads {','.join(map(str, heads))} of {total} "
                f"(min entropy {np.nanmin(stats.attention_entropy[n]):.3f})"
            )
        every_head = any(
            len(collapsed[n]) == np.isfinite(stats.attention_entropy[n]).sum() for n in names
        )
        return [
            self.alert(
                step,
                epoch,
                names,
                lowest,
                cfg.attention_entropy_threshold,
                f"attention on one token (normalised entropy < "
                f"{cfg.attention_entropy_threshold:g}): {_shown(parts)} "
                f"for {cfg.patience}+ probe steps",
                severity="critical" if every_head else "warning",
                heads={n: collapsed[n] for n in names},
            )
        ]


class RankCollapseDetector(ProbeDetector):
    """Token representations collapse towards rank one through the depth of a transformer."""

    kind = "rank_collapse"
    hint = (
        "Give every block a residual connection with normalisation before attention (pre-norm); "
        "stacked attention without skips averages the tokens together."
    )
    order = 40
    streaks = ("rank_collapsed", "rank_depth")

    def update(self, step: int, epoch: int | None, stats: ProbeStats) -> list[Alert]:
        cfg = self.config
        ranks = {
            name: rank
            for name, rank in stats.effective_rank.items()
            if stats.block_tokens[name] >= cfg.rank_min_tokens and np.isfinite(rank)
        }
        low = [n for n, r in ranks.items() if r < cfg.rank_collapse_threshold]
        stacks: dict[str, list[str]] = {}
        for name in ranks:
            stacks.setdefault(name.rpartition(".")[0], []).append(name)
        decays = {}
        for parent, names in stacks.items():
            if len(names) < 3:
                continue
            profile = np.array([ranks[n] for n in names])
            slope = fit_depth_profile(profile).slope  # log10 rank per block; ranks are >= 1
            observed, fitted = profile[-1] / profile[0], 10.0 ** (slope * (len(names) - 1))
            if observed < cfg.rank_decay_ratio and fitted < cfg.rank_decay_ratio:
                decays[parent] = (names, observed, 10.0**slope)
        collapsed = self.persisting("rank_collapsed", low)
        decaying = [decays[parent] for parent in self.persisting("rank_depth", decays)]
        alerts = []
        if collapsed:
            lowest = min(ranks[n] for n in collapsed)
            extreme = lowest < 1.0 + (cfg.rank_collapse_threshold - 1.0) / 5
            parts = [f"{n} {ranks[n]:.2f}" for n in collapsed]
            alerts.append(
                self.alert(
                    step,
                    epoch,
                    collapsed,
                    lowest,
                    cfg.rank_collapse_threshold,
                    f"tokens collapsed to one vector (effective rank < "
                    f"{cfg.rank_collapse_threshold:g} of {stats.block_tokens[collapsed[0]]} "
                    f"tokens) after {_shown(parts)} for {cfg.patience}+ probe steps",
                    severity="critical" if extreme else "warning",
                    variant="collapsed",
                    effective_rank=lowest,
                )
            )
        for names, observed, factor in decaying:
            alerts.append(
                self.alert(
                    step,
                    epoch,
                    names,
                    observed,
                    cfg.rank_decay_ratio,
                    f"effective rank falls from {ranks[names[0]]:.2f} after {names[0]} to "
                    f"{ranks[names[-1]]:.2f} after {names[-1]} (ratio {observed:.2f} < "
                    f"{cfg.rank_decay_ratio:g}, x{factor:.2f} per block) "
                    f"for {cfg.patience}+ probe steps",
                    variant="depth",
                    per_block_factor=factor,
                )
            )
        return alerts


class ProbeDetectors:
    """Turns probe statistics into alerts: every registered probe detector, in kind order.

    See the module docstring for the conditions.

    Args:
        config: thresholds (defaults: :class:`ProbeConfig`).
        disable: alert kinds not to detect.

    Raises:
        ValueError: for an unknown kind in ``disable``.
    """

    def __init__(self, config: ProbeConfig | None = None, disable: Iterable[str] = ()) -> None:
        classes = detector_classes("probe")
        disable = check_kinds(disable, tuple(cls.kind for cls in classes))
        self.config = config or ProbeConfig()
        self.detectors: list[ProbeDetector] = [
            cls(self.config) for cls in classes if cls.kind not in disable
        ]
        self.kinds = tuple(d.kind for d in self.detectors)

    def update(self, step: int, epoch: int | None, stats: ProbeStats) -> list[Alert]:
        """Alerts seen at this probe step (empty if none).

        Args:
            step: the optimizer step of the probe.
            epoch: the current epoch, if known.
            stats: what :meth:`ActivationProbes.collect` returned for this probe step.
        """
        return [alert for d in self.detectors for alert in d.update(step, epoch, stats)]

    def state_dict(self) -> dict[str, Any]:
        """Each detector's state, by kind."""
        return {d.kind: d.state_dict() for d in self.detectors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (or the streaks alone, as saved before)."""
        if set(state) == {"streaks"}:  # one dict of streaks for every kind
            state = {d.kind: state for d in self.detectors}
        for detector in self.detectors:
            if detector.kind in state:
                detector.load_state_dict(state[detector.kind])


def __getattr__(name: str) -> Any:
    """``PROBE_ALERT_KINDS``: the registered probe detectors' kinds, read when asked for."""
    if name == "PROBE_ALERT_KINDS":
        return alert_kinds("probe")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
