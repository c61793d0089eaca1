"""Thresholds of the activation probes and their detectors, with the reasoning behind each.

================================  =======  ===================================================
setting                           default  why
================================  =======  ===================================================
``dead_relu_threshold``           0.5      half of a layer's units silent on a whole batch
                                           halves its width; healthy sparse units fire on
                                           some row of a batch and stay far below this
``dead_relu_min_rows``            16       with fewer rows a unit that fires on 1 row in 10
                                           looks dead by chance (0.9^4 = 66 % on 4 rows)
``sigmoid_tail``                  0.01     sigmoid outside [0.01, 0.99] means |z| > 4.6,
                                           where σ'(z) < 0.01: under 1 % of the gradient
                                           passes (σ' is at most 0.25 even at z = 0)
``tanh_tail``                     0.01     |tanh| > 0.99 means |z| > 2.65, tanh'(z) < 0.02
``saturation_threshold``          0.5      with Xavier init pre-activations have unit
                                           variance, so < 1 % of values reach the tails; half
                                           of them there means the layer barely learns
``attention_entropy_threshold``   0.1      normalised entropy 0.1 over 16 keys is ~96 % of
                                           the weight on one key
``attention_head_share``          0.5      a few sharp heads (previous-token, delimiter) are
                                           healthy; most heads of a layer collapsed is not
``attention_min_keys``            4        with 2-3 visible keys a confident healthy head is
                                           indistinguishable from a collapsed one, so such
                                           query rows (short sequences, the first rows under
                                           a causal mask) are left out
``rank_collapse_threshold``       1.5      effective rank 1 means every token is the same
                                           vector; 1.5 is well below any healthy block
                                           (pre-norm stacks stay many times higher)
``rank_decay_ratio``              0.25     the last block of a stack keeps < 1/4 of the first
                                           block's effective rank, on a steady decline
``rank_min_tokens``               4        blocks with fewer tokens are not judged: the rank
                                           is bounded by the number of tokens
``max_samples``                   8        sequences per probe step used by the attention and
                                           rank probes (their cost grows with T² and T·d)
``patience``                      3        consecutive probe steps a condition must hold; one
                                           odd batch is not a pathology
``histogram_bins``                20       bins of the optional per-layer histograms
================================  =======  ===================================================

Example:
    >>> ProbeConfig(dead_relu_threshold=0.8).dead_relu_threshold
    0.8
    >>> ProbeConfig(patience=0)
    Traceback (most recent call last):
    ...
    ValueError: patience=0 is not allowed: expected a positive integer
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from lightning_gradflow.core.validation import check_number, fail

_SHARES = (
    "dead_relu_threshold",
    "saturation_threshold",
    "attention_entropy_threshold",
    "rank_decay_ratio",
)
_COUNTS = ("dead_relu_min_rows", "max_samples", "patience", "histogram_bins")


@dataclass(frozen=True)
class ProbeConfig:
    """Thresholds of the activation probes and detectors (see the module table)."""

    dead_relu_threshold: float = 0.5
    dead_relu_min_rows: int = 16
    sigmoid_tail: float = 0.01
    tanh_tail: float = 0.01
    saturation_threshold: float = 0.5
    attention_entropy_threshold: float = 0.1
    attention_head_share: float = 0.5
    attention_min_keys: int = 4
    rank_collapse_threshold: float = 1.5
    rank_decay_ratio: float = 0.25
    rank_min_tokens: int = 4
    max_samples: int = 8
    patience: int = 3
    histogram_bins: int = 20

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            check_number(f.name, value)
            if f.name in _SHARES and not 0 < value < 1:
                fail(f.name, value, "a number in (0, 1)")
            if f.name in _COUNTS and (not isinstance(value, int) or value < 1):
                fail(f.name, value, "a positive integer")
        if not 0 < self.sigmoid_tail < 0.5:
            fail("sigmoid_tail", self.sigmoid_tail, "a number in (0, 0.5)")
        if not 0 < self.tanh_tail < 1:
            fail("tanh_tail", self.tanh_tail, "a number in (0, 1)")
        if not 0 < self.attention_head_share <= 1:
            fail("attention_head_share", self.attention_head_share, "a number in (0, 1]")
        if not isinstance(self.attention_min_keys, int) or self.attention_min_keys < 2:
            fail("attention_min_keys", self.attention_min_keys, "an integer >= 2")
        if not self.rank_collapse_threshold > 1:
            fail("rank_collapse_threshold", self.rank_collapse_threshold, "a number > 1")
        if not isinstance(self.rank_min_tokens, int) or self.rank_min_tokens < 2:
            fail("rank_min_tokens", self.rank_min_tokens, "an integer >= 2")
