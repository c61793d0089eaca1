"""Log directories for the report tests, written with torch's ``SummaryWriter`` under the tags
of the dashboard contract (``grad_log10_norm/<index>.<name>``, ``grad_flow/*``, ``alerts/*``)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from lightning_gradflow.core.flow import fit_depth_profile
from lightning_gradflow.writers.flow_figure import render_gradient_flow

LAYERS = ("net.0", "net.2", "net.4", "net.6", "net.8", "net.10", "net.12", "net.14")
STEPS = range(0, 40, 4)


def vanishing_norms(step: int) -> np.ndarray:
    """Shrinking 10x per layer towards the input; the input layer exactly zero after step 20."""
    norms = 10.0 ** (-np.arange(len(LAYERS))[::-1] * 1.2 - 1 - step / 40)
    if step >= 20:
        norms[0] = 0.0
    return norms


def healthy_norms(step: int) -> np.ndarray:
    return 0.1 * (1 + 0.2 * np.sin(np.arange(len(LAYERS)) + step))


def write_run(
    event_dir: Path,
    norms_at,
    alerts: Sequence[tuple[int, str, str, str]] = (),
    picture: bool = False,
) -> None:
    """One run's event file: the per-layer and summary scalars at every step in ``STEPS``, the
    alerts as ``alerts/<kind>`` text, and (``picture``) ``grad_flow/picture`` at the last step."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(event_dir))
    for step in STEPS:
        norms = norms_at(step)
        for i, (name, norm) in enumerate(zip(LAYERS, norms, strict=True)):
            value = -13.0 if norm == 0 else float(np.log10(norm))
            writer.add_scalar(f"grad_log10_norm/{i:02d}.{name}", value, step)
        fit = fit_depth_profile(norms)
        writer.add_scalar("grad_flow/first_last_ratio", fit.first_last_ratio, step)
        writer.add_scalar("grad_flow/gamma", fit.gamma, step)
        writer.add_scalar("grad_flow/dead_layers", float(np.sum(norms < 1e-5)), step)
        writer.add_scalar("grad_norm/total", float(np.sqrt(np.sum(norms**2))), step)
    for step, kind, severity, message in alerts:
        writer.add_text(f"alerts/{kind}", f"**{severity}** at step {step}: {message}\n\nfix", step)
    if picture:
        image = render_gradient_flow(list(LAYERS), norms_at(STEPS[-1]), None, None, STEPS[-1])
        writer.add_image("grad_flow/picture", image, STEPS[-1], dataformats="HWC")
    writer.close()


VANISHING_ALERTS = [(8, "vanishing", "warning", "net.0 gradient norm 3e-09 < 1e-05")]


@pytest.fixture(scope="session")
def user_logs(tmp_path_factory) -> Path:
    """A user's own runs: ``logs/{vanishing,healthy}/version_0`` and a run without our tags."""
    from torch.utils.tensorboard import SummaryWriter

    root = tmp_path_factory.mktemp("user") / "logs"
    write_run(root / "vanishing" / "version_0", vanishing_norms, alerts=VANISHING_ALERTS)
    write_run(root / "healthy" / "version_0", healthy_norms, picture=True)
    other = SummaryWriter(str(root / "other"))  # someone else's run: not in the report
    other.add_scalar("loss", 1.0, 0)
    other.close()
    return root


def _metrics(model: str, override: str, qlike: float, ratio: float, alerts: dict) -> dict:
    return {
        "run": {"model": model, "data": "garch_sim", "overrides": [override]},
        "status": "ok",
        "test": {"qlike": qlike, "qlike_ratio_har": ratio},
        "baselines": [
            {"model": "har", "qlike": 1.60, "ratio_har": 1.0},
            {"model": "garch", "qlike": 1.55, "ratio_har": 0.969},
            {"model": "ewma", "qlike": 1.70, "ratio_har": 1.0625},
        ],
        "alerts": alerts,
        "alerts_file": "gradflow_alerts.jsonl",
        "gradient": {"first_last_ratio": 1e-9, "gamma": 0.06}
        if alerts
        else {
            "first_last_ratio": 0.8,
            "gamma": 1.02,
        },
    }


MLP = "model=mlp,model.net.depth=20"
RESNET = "model=resnet,model.net.depth=20"


@pytest.fixture(scope="session")
def sweep_dir(tmp_path_factory) -> Path:
    """A recipe sweep: job 0 (vanishing MLP, with predictions.csv and an alerts file) and
    job 1 (healthy ResNet, no predictions.csv)."""
    root = tmp_path_factory.mktemp("sweep") / "multiruns"
    job0, job1 = root / "0", root / "1"
    write_run(job0 / "tensorboard" / MLP / "version_0", vanishing_norms)
    write_run(job1 / "tensorboard" / RESNET / "version_0", healthy_norms, picture=True)
    (job0 / "metrics.json").write_text(
        json.dumps(_metrics("mlp", MLP, 1.81, 1.13125, {"vanishing": 2}))
    )
    (job1 / "metrics.json").write_text(json.dumps(_metrics("resnet", RESNET, 1.52, 0.95, {})))
    alerts = [
        {"kind": "vanishing", "severity": "warning", "step": 4, "message": "from the file A"},
        {"kind": "vanishing", "severity": "critical", "step": 24, "message": "from the file B"},
    ]
    (job0 / "gradflow_alerts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in alerts))
    rng = np.random.default_rng(0)
    with (job0 / "predictions.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["date", "realised", "mlp", "har", "garch", "ewma"])
        for day in range(60):
            realised = float(rng.lognormal(0, 0.5))
            out.writerow(
                [f"2024-{1 + day // 28:02d}-{1 + day % 28:02d}", realised, 1.1, 1.0, 0.9, 1.05]
            )
    return root
