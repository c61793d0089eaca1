"""``stop`` and ``raise`` are decided across ranks when the ranks see different alerts: a
gradient left out of DDP's all-reduce turns NaN on rank 1 only (``tests/scripts/
ddp_rank_alerts.py``), so only rank 1's monitor sees ``nonfinite``; both ranks must act."""

import json

import pytest

from tests.helpers.subprocess_runs import run_module


@pytest.mark.parametrize("action", ["stop", "raise"])
def test_one_rank_alerting_stops_or_raises_on_both(tmp_path, action):
    run_module("tests.scripts.ddp_rank_alerts", str(tmp_path), action)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # the ranks disagree: rank 1 alone saw the NaN, in the gate's gradient, at step 5
    assert rank1["alerts"] == [["nonfinite", 5, ["gate"]]]
    assert rank0["alerts"] == []
    # and still act together, at the step of the alert
    assert rank0["raised"] == rank1["raised"] == (action == "raise")
    assert rank0["step"] == rank1["step"] == 6  # the batch of step 5 is done
    if action == "stop":
        assert (rank0["stop_kinds"], rank1["stop_kinds"]) == ([], ["nonfinite"])


def test_auto_pictures_are_decided_the_same_on_every_rank(tmp_path):
    """Rank 0's time budget allows every ``"auto"`` picture, rank 1's none: all ranks take the
    stricter answer, so no rank flushes alone (which would hang), and only the first and the
    last step get pictures."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_module("tests.scripts.ddp_budget", str(tmp_path), timeout=180)
    steps = [json.loads((tmp_path / f"rank{r}.json").read_text())["step"] for r in (0, 1)]
    assert steps == [40, 40]
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("grad_flow/picture")] == [0, 39]
