"""The heatmap and the picture, checked on their pixels: a vanishing profile is dark at the input
side, zero and NaN/Inf layers show in their own colours, and a fixed range gives the same axis."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.colors import to_rgb

from lightning_gradflow.core.flow_history import FlowHistory
from lightning_gradflow.writers.flow_figure import (
    figure_to_rgb,
    gradient_flow_figure,
    render_gradient_flow,
)
from lightning_gradflow.writers.flow_heatmap import (
    NONFINITE_COLOR,
    ZERO_COLOR,
    flow_heatmap_figure,
    render_flow_heatmap,
)

LAYERS = 20
NAMES = [f"layers.{i}.linear" for i in range(LAYERS)]


def _rgb(colour: str) -> np.ndarray:
    return np.round(np.array(to_rgb(colour)) * 255).astype(np.uint8)


def _vanishing(steps: int = 100, zero_from: int = 60, nonfinite_at: int = 80) -> FlowHistory:
    """Norms fall a decade every two layers towards the input and keep falling with training;
    the input layer's gradient is exactly zero from ``zero_from``, the output's Inf once."""
    history = FlowHistory(NAMES)
    depth = np.arange(LAYERS)
    for step in range(steps):
        norms = 10.0 ** (-1.0 - (LAYERS - 1 - depth) * (0.3 + step / 200))
        if step >= zero_from:
            norms[0] = 0.0
        if step == nonfinite_at:
            norms[-1] = np.inf
        history.add(step, norms)
    return history


def _cell_pixels(fig, image, step: float, layer: int, half: int = 0) -> np.ndarray:
    """The pixels around the centre of a heatmap cell (``half`` pixels either side)."""
    x, y = fig.axes[0].transData.transform((step, layer))
    row, col = image.shape[0] - round(y), round(x)
    return image[row - half : row + half + 1, col - half : col + half + 1].reshape(-1, 3)


def _luminance(pixels: np.ndarray) -> float:
    return float((pixels.astype(float) @ [0.2126, 0.7152, 0.0722]).mean())


def test_heatmap_of_a_vanishing_profile_is_dark_at_the_input_side():
    history = _vanishing()
    fig = flow_heatmap_figure(history.names, history.steps, history.log10_norms())
    image = figure_to_rgb(fig)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.std() > 20  # not blank
    at = 30.5  # a column before the zero layer and the Inf appear
    input_side = [_luminance(_cell_pixels(fig, image, at, layer)) for layer in range(1, 5)]
    output_side = [_luminance(_cell_pixels(fig, image, at, layer)) for layer in range(15, 20)]
    assert max(input_side) < min(output_side)
    assert fig.axes[0].get_ylim() == (-0.5, LAYERS - 0.5)  # input at the bottom
    assert fig.axes[1].get_ylabel() == "log10 ‖g‖"  # the colourbar


def test_heatmap_of_a_healthy_profile_is_uniformly_bright_not_stretched():
    """Layers within a decade of each other must not look like a vanishing band: the default
    scale spans 6 decades down from the largest norm."""
    history = FlowHistory([f"l{i}" for i in range(LAYERS)])
    rng = np.random.default_rng(0)
    for step in range(20):
        history.add(step, 10 ** rng.uniform(-0.8, 0.0, LAYERS))
    fig = flow_heatmap_figure(history.names, history.steps, history.log10_norms())
    image = figure_to_rgb(fig)
    cells = [_luminance(_cell_pixels(fig, image, 10.5, layer)) for layer in range(LAYERS)]
    vanishing = _vanishing()
    dark_fig = flow_heatmap_figure(vanishing.names, vanishing.steps, vanishing.log10_norms())
    dark = _luminance(_cell_pixels(dark_fig, figure_to_rgb(dark_fig), 30.5, 1))
    assert min(cells) > dark + 60
    assert max(cells) - min(cells) < 60  # no band: the spread is small against the scale


def test_heatmap_shows_zero_and_nonfinite_cells_in_their_colours():
    history = _vanishing()
    fig = flow_heatmap_figure(history.names, history.steps, history.log10_norms())
    image = figure_to_rgb(fig)
    zero_cell = _cell_pixels(fig, image, 80.5, 0, half=4)
    assert (zero_cell == _rgb(ZERO_COLOR)).all(axis=1).any()  # grey between the hatch lines
    assert (_cell_pixels(fig, image, 80.5, LAYERS - 1) == _rgb(NONFINITE_COLOR)).all()
    assert (_cell_pixels(fig, image, 40.5, 0, half=4) != _rgb(ZERO_COLOR)).any(axis=1).all()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["zero gradient", "NaN/Inf gradient", "no gradient"]


def test_heatmap_with_a_fixed_range_has_the_same_colourbar_for_different_runs():
    fixed = (-16.0, 0.0)
    first, second = _vanishing(), _vanishing(steps=50, zero_from=99)
    figures = [
        flow_heatmap_figure(h.names, h.steps, h.log10_norms(), value_range=fixed)
        for h in (first, second)
    ]
    images = [figure_to_rgb(fig) for fig in figures]
    assert [fig.axes[1].get_ylim() for fig in figures] == [fixed, fixed]
    box = figures[0].axes[1].get_tightbbox().bounds  # colourbar, ticks and label
    x0, y0, width, height = (int(v) for v in box)
    rows = slice(images[0].shape[0] - y0 - height, images[0].shape[0] - y0)
    crops = [image[rows, x0 : x0 + width] for image in images]
    assert images[0].shape == images[1].shape
    np.testing.assert_array_equal(crops[0], crops[1])


def test_heatmap_refuses_a_grid_that_does_not_match():
    with pytest.raises(ValueError, match=r"shape \(2, 3\) for 2 layers and 2 steps"):
        render_flow_heatmap(["a", "b"], [0, 1], np.zeros((2, 3)))


def test_render_flow_heatmap_returns_the_figure_pixels():
    history = _vanishing(steps=5)
    image = render_flow_heatmap(history.names, history.steps, history.log10_norms())
    assert image.shape == (480, 900, 3) and image.dtype == np.uint8


def _profile(scale: float = 1.0) -> np.ndarray:
    latest = scale * 10.0 ** (-1.0 - (LAYERS - 1 - np.arange(LAYERS)) * 0.5)
    latest[[0, 3]] = 0.0
    return latest


def _marked(fig, image, layer: int, height: float, colour: str) -> bool:
    """Whether ``colour`` shows near ``layer`` at ``height`` (axes fraction) of the picture."""
    ax = fig.axes[0]
    box = ax.get_window_extent()
    col = round(ax.transData.transform((layer, 0))[0])
    row = image.shape[0] - round(box.y0 + height * box.height)
    window = image[row - 3 : row + 4, col - 3 : col + 4].reshape(-1, 3)
    return bool((window == _rgb(colour)).all(axis=1).any())


def test_picture_marks_zero_and_nonfinite_layers_at_the_edges_of_any_range():
    latest = _profile()
    bad = np.zeros(LAYERS, dtype=bool)
    bad[-1] = True
    for log10_range in (None, (-2.0, 0.0)):
        fig = gradient_flow_figure(NAMES, latest, latest / 3, latest * 3, 99, bad, log10_range)
        image = figure_to_rgb(fig)
        ax = fig.axes[0]
        assert ax.get_ylabel() == "log10 ‖g‖"
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert {"zero gradient", "NaN/Inf gradient"} <= set(legend)
        layers = range(LAYERS)
        assert [i for i in layers if _marked(fig, image, i, 0.03, "0.35")] == [0, 3]
        assert [i for i in layers if _marked(fig, image, i, 0.97, "tab:red")] == [LAYERS - 1]


def test_picture_with_a_fixed_range_keeps_the_same_axis_across_steps():
    fixed = (-14.0, 1.0)
    figures = [
        gradient_flow_figure(NAMES, _profile(scale), None, None, step, log10_range=fixed)
        for scale, step in ((1.0, 10), (1e-3, 500))
    ]
    assert [fig.axes[0].get_ylim() for fig in figures] == [fixed, fixed]
    images = [figure_to_rgb(fig) for fig in figures]
    left = int(figures[0].axes[0].get_window_extent().x0) - 2  # y label and tick labels
    np.testing.assert_array_equal(images[0][40:, :left], images[1][40:, :left])
    free = [gradient_flow_figure(NAMES, _profile(s), None, None, 1) for s in (1.0, 1e-3)]
    assert free[0].axes[0].get_ylim() != free[1].axes[0].get_ylim()


def test_render_gradient_flow_returns_the_figure_pixels():
    image = render_gradient_flow(NAMES, _profile(), None, None, 3, log10_range=(-2, 0))
    assert image.shape == (450, 760, 3) and image.dtype == np.uint8
    assert image.std() > 20
