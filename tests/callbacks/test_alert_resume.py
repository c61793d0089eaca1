"""Detector state (windows, streaks, counts, cooldowns) is checkpointed and restored."""

import warnings

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from tests.helpers.zoo import PATHOLOGICAL

SIGMOID = PATHOLOGICAL[0]  # vanishing after a patience of 10 steps, then on every step


def test_resume_continues_detector_state(tmp_path):
    uninterrupted = SIGMOID.run()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=6, save_top_k=-1)
    SIGMOID.steps = 6
    try:
        first = SIGMOID.run(extra_callbacks=[checkpoint], enable_checkpointing=True)
    finally:
        SIGMOID.steps = 20
    assert first.monitor.alert_counts == {}  # 6 steps < patience: nothing yet
    ckpt = next(tmp_path.glob("*.ckpt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed = SIGMOID.run(ckpt_path=str(ckpt))
    # the streak carried over: the alert comes at step 9, as in one uninterrupted run
    assert [a.step for a in resumed.monitor.alerts] == [
        a.step for a in uninterrupted.monitor.alerts
    ]
    assert resumed.monitor.alert_counts == uninterrupted.monitor.alert_counts


def test_resume_keeps_announced_alerts_and_cooldown(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=15, save_top_k=-1)
    first = SIGMOID.run(extra_callbacks=[checkpoint], enable_checkpointing=True)
    assert len(first.monitor.alerts) == 1
    SIGMOID.steps = 30
    try:
        resumed = SIGMOID.run(ckpt_path=str(next(tmp_path.glob("*.ckpt"))))
    finally:
        SIGMOID.steps = 20
    assert [a.step for a in resumed.monitor.alerts] == [9]  # restored, not re-announced
    assert resumed.monitor.alert_counts["vanishing"] == 30 - 9
    assert isinstance(resumed.monitor, pl.Callback)


def test_resume_mid_dead_streak(tmp_path):
    """Zero gradients on steps 20-24 before the checkpoint and 25-29 after it: dead at step 29,
    as in one uninterrupted run (a fresh count would wait until step 34)."""
    dead = next(c for c in PATHOLOGICAL if c.name.startswith("tanh MLP, unnormalised inputs"))
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=25, save_top_k=-1)
    whole = dead.run(extra_callbacks=[checkpoint], enable_checkpointing=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed = dead.run(ckpt_path=str(next(tmp_path.glob("*step=25.ckpt"))))
    assert resumed.first_step == whole.first_step == {"vanishing": 29}
