"""The TensorBoard Custom Scalars layout: the gradient-flow story in a handful of charts per run.

Category ``gradient flow``: one chart with every layer's ``grad_log10_norm/<index>.<name>``
(the zero-padded index keeps depth order), and one chart per depth summary, since their scales
differ: log10 first/last ratio, gamma, dead layers, lowest/highest layer log10 norm, NaN/Inf
layers. With several optimizers the step-wide tags carry ``_optimizer<k>`` and each optimizer
gets its own summary charts. Category ``alerts``: alerts announced and steps each condition held.

Tags are regular expressions matched from the start of the tag (TensorBoard uses
``re.match``); exact tags end in ``$`` so ``grad_flow/gamma`` does not also pick up
``grad_flow/gamma_optimizer1``.

Example:
    >>> layout = gradient_flow_layout()
    >>> layout["gradient flow"]["gamma (per-layer factor)"]
    ['Multiline', ['grad_flow/gamma$']]
    >>> summary_writer.add_custom_scalars(layout)  # doctest: +SKIP
"""

from __future__ import annotations

import re

Layout = dict[str, dict[str, list]]

LAYER_CHART = "layer log10 ‖g‖ (input → output)"
SUMMARY_CHARTS = {
    "log10 first/last ratio": ("grad_flow/log10_first_last_ratio",),
    "gamma (per-layer factor)": ("grad_flow/gamma",),
    "dead layers (below the floor)": ("grad_flow/dead_layers",),
    "lowest / highest layer log10 ‖g‖": (
        "grad_flow/min_log10_norm",
        "grad_flow/max_log10_norm",
    ),
    "NaN/Inf layers": ("grad_nonfinite/layers",),
}
ALERT_CHARTS = {
    "alerts announced": "alerts/announced/.*",
    "steps the condition held": "alerts/active_steps/.*",
}


def gradient_flow_layout(num_optimizers: int = 1) -> Layout:
    """The layout ``SummaryWriter.add_custom_scalars`` takes (see the module docstring).

    Args:
        num_optimizers: how many optimizers step; above one, the summary charts are per optimizer.

    Raises:
        ValueError: if ``num_optimizers`` is below 1.
    """
    if num_optimizers < 1:
        raise ValueError(
            f"gradient_flow_layout: num_optimizers={num_optimizers!r}; allowed: an int >= 1"
        )
    flow: dict[str, list] = {LAYER_CHART: ["Multiline", ["grad_log10_norm/.*"]]}
    for k in range(num_optimizers):
        suffix, label = (f"_optimizer{k}", f", optimizer {k}") if num_optimizers > 1 else ("", "")
        for title, tags in SUMMARY_CHARTS.items():
            flow[title + label] = ["Multiline", [re.escape(t + suffix) + "$" for t in tags]]
    alerts = {title: ["Multiline", [regex]] for title, regex in ALERT_CHARTS.items()}
    return {"gradient flow": flow, "alerts": alerts}
