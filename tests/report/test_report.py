"""build_report on event files written with torch's SummaryWriter, read back as a person would:
the summary names the vanishing run, the tables hold the right rows, every PNG decodes."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from lightning_gradflow.report import build_report
from lightning_gradflow.report.cli import main
from lightning_gradflow.report.runs import load_runs
from lightning_gradflow.writers.flow_heatmap import ZERO_COLOR
from tests.helpers.subprocess_runs import ROOT
from tests.report.conftest import LAYERS, MLP, RESNET, STEPS


def _summary(page: str) -> str:
    return re.search(r'<div class="summary".*?</div>', page, re.S).group(0)


def _pngs(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.png"))


def assert_not_blank(path: Path) -> None:
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100, path
    assert pixels[..., :3].std() > 0.01, f"{path} is blank"


@pytest.fixture(scope="module")
def user_report(user_logs, tmp_path_factory):
    out = tmp_path_factory.mktemp("user_report")
    return build_report(user_logs, out)


def test_the_summary_names_the_vanishing_run_and_not_the_healthy_one(user_report):
    summary = _summary(user_report.read_text())
    vanishing = re.search(r"Vanishing gradients: 1 of 2 runs</h2><ul>(.*?)</ul>", summary).group(1)
    assert ">vanishing</b>" in vanishing
    assert "5 dead layers at step 36" in vanishing  # below 1e-5, the zeroed input layer too
    assert "healthy" not in vanishing and "Exploding gradients" not in summary
    assert "No vanishing or exploding gradients in: <b>healthy</b>" in summary


def test_runs_are_found_at_any_depth_and_named_by_their_path(user_logs):
    runs = load_runs(user_logs)
    assert [r.name for r in runs] == ["healthy", "vanishing"]  # "other" has no gradient tags
    vanishing = runs[1]
    assert vanishing.path == "vanishing/version_0"
    assert vanishing.layers == tuple(f"{i:02d}.{n}" for i, n in enumerate(LAYERS))
    assert vanishing.steps.tolist() == list(STEPS)
    assert vanishing.log10_norms[-1, 0] == -13.0  # the zero gradient stays visible
    assert [(a.step, a.kind, a.severity) for a in vanishing.alerts] == [(8, "vanishing", "warning")]
    assert vanishing.alerts_source == "TensorBoard text"
    assert runs[0].picture is not None and runs[0].picture[1] == STEPS[-1]


def test_every_image_is_embedded_and_written_beside_the_page(user_report):
    page = user_report.read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    files = _pngs(user_report.parent)
    # overview + per run heatmap and picture + the vanishing run's alert timeline
    assert len(files) == len(sources) == 6, [f.name for f in files]
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(https?:|//)', page)  # nothing fetched
    for path in files:
        assert_not_blank(path)


def test_heatmap_shows_zero_gradients_in_their_own_colour(user_report):
    [heatmap] = [p for p in _pngs(user_report.parent) if p.name.endswith("vanishing_heatmap.png")]
    pixels = (imread(heatmap)[..., :3] * 255).round()
    zero = np.array(to_rgb(ZERO_COLOR)) * 255  # the monitor's heatmap colours, the same here
    assert (np.abs(pixels - zero).sum(axis=-1) < 6).sum() > 100


def test_sweep_report_has_the_results_table_and_forecasts(sweep_dir):
    path = build_report(sweep_dir)
    assert path == sweep_dir / "report.html"
    page = path.read_text()
    results = page[page.index('id="results"') :]
    table = results[: results.index("</table>")]
    rows = re.findall(r"<tr[^>]*><td>(.*?)</td>", table)
    # sorted by test QLIKE: resnet 1.52, garch 1.55, har 1.60, ewma 1.70, mlp 1.81
    assert rows == [
        RESNET,
        "baseline: garch",
        "baseline: har",
        "baseline: ewma",
        MLP,
    ]
    assert "1.8100" in table and "1.131" in table and "1e-09" in table and "vanishing:2" in table
    vanishing = _summary(page).split("</ul>")[0]
    assert MLP in vanishing and RESNET not in vanishing
    forecasts = [p.name for p in _pngs(sweep_dir) if p.name.endswith("_forecast.png")]
    assert forecasts == [f"00_{MLP}_forecast.png"]  # job 1 has no predictions.csv
    for png in _pngs(sweep_dir):
        assert_not_blank(png)


def test_sweep_alerts_come_from_the_jobs_alerts_file(sweep_dir):
    mlp, resnet = load_runs(sweep_dir)
    assert mlp.name == MLP and resnet.name == RESNET
    assert [a.message for a in mlp.alerts] == ["from the file A", "from the file B"]
    assert mlp.alerts_source == "gradflow_alerts.jsonl"
    assert mlp.predictions is not None and list(mlp.predictions.forecasts) == [
        "mlp",
        "har",
        "garch",
        "ewma",
    ]
    assert resnet.predictions is None and resnet.alerts == ()


def test_cli_writes_the_report_and_fails_clearly_without_runs(user_logs, tmp_path, capsys):
    assert main(["report", str(user_logs), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "report.html").is_file()
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "no TensorBoard event files with gradient-flow tags" in capsys.readouterr().err


def test_python_dash_m_writes_the_report(user_logs, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_gradflow.report", str(user_logs), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"report written to {tmp_path / 'report.html'}"


def test_reading_the_event_files_logs_nothing_even_at_info(user_logs, tmp_path, caplog):
    """A Hydra sweep configures logging at INFO: TensorBoard's reader must not print a line
    per event file into the sweep's console."""
    with caplog.at_level(logging.INFO):
        build_report(user_logs, tmp_path / "quiet")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("tensorboard")] == []
    assert logging.getLogger("tensorboard").level == logging.NOTSET  # restored
