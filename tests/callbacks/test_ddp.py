"""Real 2-process CPU runs (gloo) against a single-process run on the same global batch: DDP
(replicated gradients) and FSDP2 through ``ModelParallelStrategy`` (DTensor shards)."""

from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers.subprocess_runs import run_module


def _run(out_dir: Path, devices: int, strategy: str, optimizer: str) -> None:
    run_module("tests.scripts.ddp_gradflow", str(out_dir), str(devices), strategy, optimizer)


def _events(out_dir: Path) -> EventAccumulator:
    files = list(out_dir.rglob("events.out.tfevents.*"))
    assert len(files) == 1, files  # written once, by rank zero only
    events = EventAccumulator(str(files[0]), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    return events


# DDP with plain SGD: the update measured from a copy of the weights; FSDP2 with AdamW: read
# from the optimizer's (DTensor) state. Each against one process with the same optimizer.
OPTIMIZER = {"ddp": "sgd", "fsdp": "adamw"}


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def runs(request, tmp_path_factory):
    optimizer = OPTIMIZER[request.param]
    single = tmp_path_factory.mktemp(f"single_{optimizer}")
    _run(single, 1, "ddp", optimizer)
    out = tmp_path_factory.mktemp(request.param)
    _run(out, 2, request.param, optimizer)
    kinds = (out / "parameter_types.txt").read_text()
    assert kinds == ("DTensor" if request.param == "fsdp" else "Parameter"), kinds
    return _events(single), _events(out)


def test_ddp_logs_the_same_norms_as_one_process(runs):
    single, ddp = runs
    prefixes = ("grad_norm/", "grad_log10_norm/", "weight_norm/", "update_ratio_log10/")
    tags = [t for t in single.Tags()["scalars"] if t.startswith(prefixes)]
    assert "grad_norm/total" in tags and len(tags) == 13
    assert set(tags) <= set(ddp.Tags()["scalars"])
    for tag in tags:
        a, b = single.Scalars(tag), ddp.Scalars(tag)
        assert [e.step for e in a] == [e.step for e in b] == list(range(6)), tag
        np.testing.assert_allclose(
            [e.value for e in b], [e.value for e in a], rtol=1e-4, err_msg=tag
        )


def test_ddp_histograms_logged_once_per_step(runs):
    single, ddp = runs
    prefixes = ("grad_log10_hist/", "grad_values/")
    tags = [t for t in single.Tags()["histograms"] if t.startswith(prefixes)]
    assert len(tags) == 8
    for tag in tags:
        hists = ddp.Histograms(tag)
        assert [h.step for h in hists] == [0, 2, 4, 5]  # 5: the last step
        for h_single, h_ddp in zip(single.Histograms(tag), hists, strict=True):
            a, b = h_single.histogram_value, h_ddp.histogram_value
            assert sum(b.bucket) == sum(a.bucket), tag  # every element counted once
            np.testing.assert_allclose(b.bucket_limit, a.bucket_limit, rtol=1e-5, err_msg=tag)
            # float rounding of a gradient at a bin edge may move one count
            assert np.abs(np.subtract(b.bucket, a.bucket)).sum() <= 2, tag


def test_ddp_activation_probes_cover_the_global_batch(runs):
    single, ddp = runs
    tags = [t for t in single.Tags()["scalars"] if t.startswith("probe/")]
    assert "probe/saturation/net.1" in tags
    for tag in tags:
        a, b = single.Scalars(tag), ddp.Scalars(tag)
        assert [e.step for e in a] == [e.step for e in b] == [0]
        assert b[0].value == pytest.approx(a[0].value, abs=1e-6), tag
