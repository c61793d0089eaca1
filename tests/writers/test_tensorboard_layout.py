"""The Custom Scalars layout, written with a real SummaryWriter and read back from the event
file, and its regexes checked against the engine's tags (TensorBoard matches with ``re.match``)."""

import re

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2, metadata
from torch.utils.tensorboard import SummaryWriter

from lightning_gradflow.writers.tensorboard_layout import gradient_flow_layout


def _written_layout(log_dir, num_optimizers: int) -> layout_pb2.Layout:
    writer = SummaryWriter(str(log_dir))
    writer.add_custom_scalars(gradient_flow_layout(num_optimizers))
    writer.close()
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    [event] = events.Tensors(metadata.CONFIG_SUMMARY_TAG)
    return layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])


def _charts(layout: layout_pb2.Layout) -> dict[str, dict[str, list[str]]]:
    return {
        category.title: {chart.title: list(chart.multiline.tag) for chart in category.chart}
        for category in layout.category
    }


def _matches(regexes: list[str], tags: list[str]) -> list[str]:
    return [tag for tag in tags if any(re.match(regex, tag) for regex in regexes)]


TAGS = [
    "grad_log10_norm/00.embed",
    "grad_log10_norm/01.blocks.0.linear",
    "grad_log10_norm/10.head",
    "grad_flow/first_last_ratio",
    "grad_flow/log10_first_last_ratio",
    "grad_flow/gamma",
    "grad_flow/dead_layers",
    "grad_flow/min_log10_norm",
    "grad_flow/max_log10_norm",
    "grad_nonfinite/layers",
    "grad_norm/total",
    "alerts/announced/vanishing",
    "alerts/active_steps/vanishing",
    "alerts/announced/exploding",
]


def test_layout_read_back_from_the_event_file(tmp_path):
    charts = _charts(_written_layout(tmp_path, num_optimizers=1))
    assert list(charts) == ["gradient flow", "alerts"]
    flow, alerts = charts["gradient flow"], charts["alerts"]
    assert flow == {
        "layer log10 ‖g‖ (input → output)": ["grad_log10_norm/.*"],
        "log10 first/last ratio": ["grad_flow/log10_first_last_ratio$"],
        "gamma (per-layer factor)": ["grad_flow/gamma$"],
        "dead layers (below the floor)": ["grad_flow/dead_layers$"],
        "lowest / highest layer log10 ‖g‖": [
            "grad_flow/min_log10_norm$",
            "grad_flow/max_log10_norm$",
        ],
        "NaN/Inf layers": ["grad_nonfinite/layers$"],
    }
    assert alerts == {
        "alerts announced": ["alerts/announced/.*"],
        "steps the condition held": ["alerts/active_steps/.*"],
    }
    assert _matches(flow["layer log10 ‖g‖ (input → output)"], TAGS) == TAGS[:3]  # depth order
    assert _matches(flow["gamma (per-layer factor)"], TAGS) == ["grad_flow/gamma"]
    assert _matches(flow["log10 first/last ratio"], TAGS) == ["grad_flow/log10_first_last_ratio"]
    assert _matches(alerts["alerts announced"], TAGS) == [
        "alerts/announced/vanishing",
        "alerts/announced/exploding",
    ]


def test_several_optimizers_get_summary_charts_each(tmp_path):
    flow = _charts(_written_layout(tmp_path, num_optimizers=2))["gradient flow"]
    assert len(flow) == 1 + 2 * 5
    tags = ["grad_flow/gamma_optimizer0", "grad_flow/gamma_optimizer1", "grad_flow/gamma"]
    assert _matches(flow["gamma (per-layer factor), optimizer 1"], tags) == [tags[1]]
    assert flow["lowest / highest layer log10 ‖g‖, optimizer 0"] == [
        "grad_flow/min_log10_norm_optimizer0$",
        "grad_flow/max_log10_norm_optimizer0$",
    ]
    assert flow["layer log10 ‖g‖ (input → output)"] == ["grad_log10_norm/.*"]


def test_no_optimizer_is_refused():
    with pytest.raises(ValueError, match=r"num_optimizers=0.*>= 1"):
        gradient_flow_layout(0)


def test_one_optimizer_by_default_and_every_chart_a_multiline_chart():
    """``add_custom_scalars`` takes ``[kind, tags]`` per chart; ``"Multiline"`` is documented."""
    layout = gradient_flow_layout()
    assert layout == gradient_flow_layout(1)
    for num_optimizers in (1, 2):
        charts = gradient_flow_layout(num_optimizers).values()
        assert {chart[0] for category in charts for chart in category.values()} == {"Multiline"}


@pytest.mark.parametrize(
    ("num_optimizers", "charts", "gamma"),
    [
        (0, 6, ("gamma (per-layer factor)", "grad_flow/gamma$")),
        (1, 6, ("gamma (per-layer factor)", "grad_flow/gamma$")),
        (2, 11, ("gamma (per-layer factor), optimizer 1", "grad_flow/gamma_optimizer1$")),
    ],
)
def test_the_tensorboard_writer_starts_with_the_layout(tmp_path, num_optimizers, charts, gamma):
    """A run without an optimizer (yet) still gets the one-optimizer layout."""
    from lightning_gradflow.writers.tensorboard_writer import TensorBoardWriter

    writer = SummaryWriter(str(tmp_path))
    TensorBoardWriter(writer).start(num_optimizers)
    writer.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    events.Reload()
    [event] = events.Tensors(metadata.CONFIG_SUMMARY_TAG)
    flow = _charts(layout_pb2.Layout.FromString(event.tensor_proto.string_val[0]))["gradient flow"]
    assert len(flow) == charts
    assert flow[gamma[0]] == [gamma[1]]
