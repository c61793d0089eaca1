"""The heatmap checked on its artists, not its pixels: column edges, the colour scale, which cells
are colour-mapped, the rectangles painted over zero and NaN/Inf cells, legend, title and axes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import matplotlib
from matplotlib.colors import to_rgba
from matplotlib.text import Text

from lightning_gradflow.core.flow_history import ZERO_LOG10
from lightning_gradflow.writers.flow_figure import figure_to_rgb
from lightning_gradflow.writers.flow_heatmap import flow_heatmap_figure, render_flow_heatmap

Z, INF, NAN = ZERO_LOG10, np.inf, np.nan
NAMES = ["embed", "blocks.0.linear", "head"]
STEPS = [0, 10, 20, 35, 50]
LOGS = np.array(
    [
        [-6.0, Z, Z, -5.0, -4.0],  # a zero run over columns 1-2
        [-1.0, INF, NAN, -2.0, INF],  # NaN/Inf in columns 1 and 4, no gradient in 2
        [Z, -3.0, Z, Z, NAN],  # two zero runs in one row
    ]
)


def _boxes(collection) -> set[tuple[float, ...]]:
    """(x0, y0, x1, y1) of every rectangle of a PatchCollection, in data coordinates."""
    return {
        tuple(float(v) for v in (*p.vertices.min(0), *p.vertices.max(0)))
        for p in collection.get_paths()
    }


def _figure(**kwargs):
    fig = flow_heatmap_figure(NAMES, STEPS, LOGS, **kwargs)
    mesh, zero, nonfinite = fig.axes[0].collections
    return fig, mesh, zero, nonfinite


def test_columns_span_from_their_step_to_the_next_and_the_last_as_wide_as_the_one_before():
    _, mesh, _, _ = _figure()
    coords = mesh.get_coordinates()  # (rows + 1, columns + 1, 2) corners
    np.testing.assert_array_equal(coords[0, :, 0], [0, 10, 20, 35, 50, 65])
    np.testing.assert_array_equal(coords[:, 0, 1], [-0.5, 0.5, 1.5, 2.5])


@pytest.mark.parametrize(
    ("steps", "edges"),
    [([0, 10, 25], [0, 10, 25, 40]), ([0, 10], [0, 10, 20]), ([7], [7, 8]), ([3, 4], [3, 4, 5])],
)
def test_column_edges(steps, edges):
    fig = flow_heatmap_figure(["a"], steps, np.full((1, len(steps)), -2.0))
    np.testing.assert_array_equal(fig.axes[0].collections[0].get_coordinates()[0, :, 0], edges)


def test_only_finite_non_zero_cells_are_colour_mapped_on_the_default_scale():
    _, mesh, _, _ = _figure()
    data = mesh.get_array()
    expected_mask = ~np.isfinite(LOGS) | (LOGS == Z)
    np.testing.assert_array_equal(np.ma.getmaskarray(data).reshape(LOGS.shape), expected_mask)
    # largest finite non-zero -1; the smallest (-6) is within 6 decades of it, so -1 - 6
    assert mesh.get_clim() == (-7.0, -1.0)
    assert mesh.colorbar.extend == "neither"


def test_a_grid_without_finite_non_zero_cells_gets_six_decades_below_one():
    fig = flow_heatmap_figure(["a", "b"], [0, 1], np.array([[Z, NAN], [INF, Z]]))
    assert fig.axes[0].collections[0].get_clim() == (-6.0, 0.0)


def test_a_fixed_range_sets_the_scale_and_extends_the_colourbar_both_ways():
    _, mesh, _, _ = _figure(value_range=(-10.0, 2.0))
    assert mesh.get_clim() == (-10.0, 2.0)
    assert mesh.colorbar.extend == "both"


def test_the_colour_map_is_viridis_whatever_the_style():
    with matplotlib.rc_context({"image.cmap": "gray"}):
        _, mesh, _, _ = _figure()
    assert mesh.get_cmap().name == "viridis"


def test_zero_and_nonfinite_cells_are_painted_one_rectangle_per_run():
    _, _, zero, nonfinite = _figure()
    assert _boxes(zero) == {
        (10.0, -0.5, 35.0, 0.5),
        (0.0, 1.5, 10.0, 2.5),
        (20.0, 1.5, 50.0, 2.5),
    }
    assert _boxes(nonfinite) == {(10.0, 0.5, 20.0, 1.5), (50.0, 0.5, 65.0, 1.5)}
    assert [tuple(c) for c in zero.get_facecolor()] == [to_rgba("0.6")]
    assert [tuple(c) for c in zero.get_edgecolor()] == [to_rgba("0.35")]
    assert zero.get_hatch() == "///" and list(zero.get_linewidth()) == [0.0]
    assert [tuple(c) for c in nonfinite.get_facecolor()] == [to_rgba("red")]
    assert nonfinite.get_hatch() is None


def test_legend_swatches_and_placement():
    fig, _, _, _ = _figure()
    ax = fig.axes[0]
    legend = ax.get_legend()
    swatches = {
        h.get_label(): (h.get_facecolor(), h.get_edgecolor(), h.get_hatch())
        for h in legend.legend_handles
    }
    assert swatches == {
        "zero gradient": (to_rgba("0.6"), to_rgba("0.35"), "///"),
        "NaN/Inf gradient": (to_rgba("red"), (0.0, 0.0, 0.0, 0.0), None),
        "no gradient": (to_rgba("white"), to_rgba("0.5"), None),
    }
    assert [t.get_fontsize() for t in legend.get_texts()] == [7.0, 7.0, 7.0]
    assert not legend.get_frame_on()
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in legend.get_texts()]
    assert len({round(b.y0, 3) for b in boxes}) == 1  # one row
    assert boxes[0].x0 < boxes[1].x0 < boxes[2].x0
    anchor = legend.get_bbox_to_anchor()  # a point: the axes' top-right corner
    assert anchor.width == 0 and anchor.height == 0
    np.testing.assert_allclose((anchor.x0, anchor.y0), ax.transAxes.transform((1.0, 1.0)))


def test_title_labels_and_axes():
    with matplotlib.rc_context({"font.size": 14.0}):  # a style's size does not reach the title
        fig, _, _, _ = _figure()
    ax = fig.axes[0]
    title = "Gradient flow over training, steps 0–50"
    assert ax.get_title(loc="left") == title and ax.get_title() == ""
    [text] = [t for t in ax.get_children() if isinstance(t, Text) and t.get_text() == title]
    assert text.get_fontsize() == 10.0
    assert ax.get_xlabel() == "optimizer step"
    assert ax.get_ylabel() == "layer (input at the bottom)"
    assert fig.axes[1].get_ylabel() == "log10 ‖g‖"
    box = ax.get_position()  # the heatmap fills the figure, left of the colourbar
    assert box.x0 < 0.2 and box.x1 > 0.6 and box.y0 < 0.3 and box.y1 > 0.8
    assert ax.get_ylim() == (-0.5, 2.5)


def test_steps_read_back_as_floats_are_shown_as_integers():
    steps = np.array(STEPS, dtype=np.float64)  # e.g. after a JSON round trip
    fig = flow_heatmap_figure(NAMES, steps, LOGS)
    assert fig.axes[0].get_title(loc="left") == "Gradient flow over training, steps 0–50"


@pytest.mark.parametrize(("count", "named"), [(40, True), (41, False)])
def test_layers_are_named_up_to_forty(count, named):
    names = [f"layers.{i}" for i in range(count)]
    fig = flow_heatmap_figure(names, [0], np.full((count, 1), -2.0))
    ax = fig.axes[0]
    if named:
        assert list(ax.get_yticks()) == list(range(count))
        labels = ax.get_yticklabels()
        assert [t.get_text() for t in labels] == names
        assert {t.get_fontsize() for t in labels} == {7.0}
        assert ax.get_ylabel() == "layer (input at the bottom)"
    else:
        assert ax.get_ylabel() == "layer index, input at the bottom (41 layers)"


@pytest.mark.parametrize(("count", "height"), [(5, 4.0), (30, 6.2), (50, 8.0)])
def test_figure_height_grows_with_the_layers_between_four_and_eight_inches(count, height):
    fig = flow_heatmap_figure([str(i) for i in range(count)], [0], np.full((count, 1), -2.0))
    np.testing.assert_allclose(fig.get_size_inches(), (9.0, height))


def test_render_draws_the_figure_with_the_given_range():
    fixed = (-12.0, 3.0)
    image = render_flow_heatmap(NAMES, STEPS, LOGS, value_range=fixed)
    np.testing.assert_array_equal(
        image, figure_to_rgb(flow_heatmap_figure(NAMES, STEPS, LOGS, value_range=fixed))
    )
    assert not np.array_equal(image, render_flow_heatmap(NAMES, STEPS, LOGS))
