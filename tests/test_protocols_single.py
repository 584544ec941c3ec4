"""The Single protocol's stopping rule and phase-1 target on scripted loss curves."""

from __future__ import annotations

import math

import pytest

from crelu.protocols import phase1_target, select_phase1_epoch, single_outcome, single_stop_epoch
from crelu.results.record import RecordError, RunRecord

CURVE = [2.0, 1.5, 1.2, 1.0, 0.9, 1.1]


def test_stop_at_first_epoch_at_or_below_target():
    assert single_stop_epoch(CURVE, 1.25) == 2
    assert single_stop_epoch(CURVE, 1.0) == 3  # equality counts
    assert single_stop_epoch(CURVE, 5.0) == 0
    assert single_stop_epoch([math.nan, 0.5], 1.0) == 1  # NaN never satisfies


def test_never_reached():
    assert single_stop_epoch(CURVE, 0.5) is None
    assert single_stop_epoch([], 0.5) is None
    out = single_outcome(CURVE, 0.5)
    assert out == {"stop_index": 5, "epoch": 6, "reached": False, "stop_reason": "schedule_end"}
    assert single_outcome(CURVE, 1.0) == {
        "stop_index": 3,
        "epoch": 4,
        "reached": True,
        "stop_reason": "target_loss_reached",
    }
    with pytest.raises(ValueError):
        single_stop_epoch(CURVE, math.nan)


def _phase1(**kw):
    epochs = [
        {"epoch": 1, "val_error": 30.0, "val_loss": 0.9, "train_eval_loss": 0.8},
        {"epoch": 2, "val_error": 20.0, "val_loss": 0.7, "train_eval_loss": 0.5},
        {"epoch": 3, "val_error": 20.0, "val_loss": 0.6, "train_eval_loss": 0.4},
        {"epoch": 4, "val_error": 25.0, "val_loss": 0.8, "train_eval_loss": 0.2},
    ]
    data = {"status": "finished", "meta": {"phase": "phase1"}, "epochs": epochs, "final": {}}
    data.update(kw)
    return data


def test_phase1_target_from_trainer_final_keys(tmp_path):
    # what the trainer writes: final.train_eval_loss and, with stop_point=best_val, final.best_train_eval_loss
    rec = RunRecord(tmp_path / "p1", _phase1(final={"train_eval_loss": 0.21, "best_train_eval_loss": 0.47}))
    rec.save()
    assert phase1_target(rec, "end") == 0.21
    assert phase1_target(rec, "best_val") == 0.47


def test_phase1_target_from_epochs():
    assert phase1_target(_phase1(), "end") == 0.2
    # best val error 20.0 at epochs 2 and 3: the earliest wins (the trainer keeps the first strictly better)
    assert select_phase1_epoch(_phase1()["epochs"], "best_val") == 1
    assert phase1_target(_phase1(), "best_val") == 0.5


def test_phase1_target_errors():
    no_key = _phase1(epochs=[{"epoch": 1, "train_loss": 0.1, "val_error": 1.0}])
    with pytest.raises(RecordError, match="train_eval_loss"):
        phase1_target(no_key, "end")
    assert phase1_target(no_key, "end", loss_key="train_loss") == 0.1
    with pytest.raises(RecordError, match="not finished"):
        phase1_target(_phase1(status="running"))
    with pytest.raises(RecordError, match="phase2"):
        phase1_target(_phase1(meta={"phase": "phase2"}))
    with pytest.raises(RecordError, match="val_error"):
        phase1_target(_phase1(epochs=[{"epoch": 1, "train_eval_loss": 0.3}]), "best_val")
    with pytest.raises(ValueError):
        phase1_target(_phase1(), "middle")
    with pytest.raises(ValueError):
        select_phase1_epoch(_phase1()["epochs"], "middle")
    with pytest.raises(RecordError, match="not finite"):
        phase1_target(_phase1(final={"train_eval_loss": float("nan")}))
