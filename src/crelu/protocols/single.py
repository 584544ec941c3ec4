"""The math of the "Single" protocol of Tables 1 and 2 (docs/recipes.md); the orchestration lives elsewhere.

[PAPER]: hold out part of the training set for an initial run, then retrain from scratch on the whole training
set until the loss on the held-out part reaches the same value (Goodfellow et al. 2013, maxout).

Concretely (details INFERRED from the maxout code, docs/recipes.md):

1. Phase 1 trains on the training subset (40k of 50k).  Its stopping point is the end of the schedule
   (``stop_point="end"``) or the epoch with the best held-out error (``"best_val"``), a knob.
2. L* = the **eval-mode** mean cross-entropy on the *training subset* at that point (no dropout, no
   augmentation), :func:`phase1_target`.  The trainer writes it to the phase-1 record as
   ``final.train_eval_loss`` (end of schedule) and ``final.best_train_eval_loss`` (model of the best held-out
   epoch, with ``stop_point=best_val``).  The train-mode running average ``train_loss`` is deliberately
   **not** used as a fallback: it is a different quantity.
3. Phase 2 retrains from scratch on all 50k; after each epoch it computes the eval-mode cross-entropy on the
   held-out 10k and stops at the first epoch where it is <= L*, :func:`single_stop_epoch`.  If that never
   happens it runs to the end of the schedule and the run is flagged (``reached = False``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from crelu.results.record import RecordError, RunRecord

__all__ = ["FINAL_KEYS", "phase1_target", "select_phase1_epoch", "single_outcome", "single_stop_epoch"]

STOP_POINTS = ("end", "best_val")


def single_stop_epoch(holdout_losses_per_epoch: Sequence[float], target_loss: float) -> int | None:
    """0-based index of the first epoch whose held-out loss is <= ``target_loss`` (L*), or ``None``.

    ``holdout_losses_per_epoch[i]`` is the eval-mode loss after epoch ``i + 1`` (records number epochs from 1,
    so the returned index ``i`` is epoch ``i + 1``).  A NaN loss never satisfies the rule.
    """
    target = float(target_loss)
    if not math.isfinite(target):
        raise ValueError(f"target_loss must be finite, got {target_loss!r}")
    for i, loss in enumerate(holdout_losses_per_epoch):
        if float(loss) <= target:  # NaN compares False
            return i
    return None


def single_outcome(holdout_losses_per_epoch: Sequence[float], target_loss: float) -> dict[str, Any]:
    """Summary of phase 2 given its per-epoch held-out losses (all epochs run so far, or the whole schedule).

    ``{"stop_index": int, "epoch": int (1-based), "reached": bool, "stop_reason": str}``; when L* is never
    reached the stop is the last epoch with ``stop_reason = "schedule_end"`` and ``reached = False``.
    """
    losses = list(holdout_losses_per_epoch)
    if not losses:
        raise ValueError("single_outcome() needs at least one epoch")
    i = single_stop_epoch(losses, target_loss)
    if i is None:
        return {
            "stop_index": len(losses) - 1,
            "epoch": len(losses),
            "reached": False,
            "stop_reason": "schedule_end",
        }
    return {"stop_index": i, "epoch": i + 1, "reached": True, "stop_reason": "target_loss_reached"}


def select_phase1_epoch(epochs: Sequence[Mapping[str, Any]], stop_point: str = "end") -> int:
    """0-based index into ``epochs`` of phase 1's stopping point.

    ``"end"``: the last epoch.  ``"best_val"``: the lowest ``val_error``, the earliest such epoch on ties (the
    trainer keeps the first strictly better epoch's model, so this agrees with it).
    """
    if stop_point not in STOP_POINTS:
        raise ValueError(f"stop_point must be one of {STOP_POINTS}, got {stop_point!r}")
    if not epochs:
        raise RecordError("the phase-1 record has no epochs")
    if stop_point == "end":
        return len(epochs) - 1
    scored = [
        (float(e["val_error"]), i)
        for i, e in enumerate(epochs)
        if e.get("val_error") is not None and math.isfinite(float(e["val_error"]))
    ]
    if not scored:
        raise RecordError("stop_point='best_val' needs 'val_error' in the phase-1 epochs (a held-out part)")
    return min(scored)[1]


def _record_data(record: RunRecord | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    if isinstance(record, RunRecord):
        return record.data, str(record.run_dir)
    return record, "<record>"


FINAL_KEYS = {"end": "train_eval_loss", "best_val": "best_train_eval_loss"}


def phase1_target(
    record: RunRecord | Mapping[str, Any], stop_point: str = "end", loss_key: str | None = None
) -> float:
    """L* from a finished phase-1 record: the eval-mode loss on the training subset at the stopping point.

    Looks, in order, at ``final[FINAL_KEYS[stop_point]]`` (``train_eval_loss`` / ``best_train_eval_loss``,
    what the trainer writes) and at ``epochs[select_phase1_epoch(epochs, stop_point)][loss_key]`` for records
    that log the eval-mode subset loss per epoch (``loss_key`` defaults to ``train_eval_loss``; passing it
    also makes it the ``final`` key for ``stop_point="end"``).  Raises :class:`RecordError` naming the missing
    field, or if the record is unfinished or not a phase-1 record.
    """
    if stop_point not in STOP_POINTS:
        raise ValueError(f"stop_point must be one of {STOP_POINTS}, got {stop_point!r}")
    data, where = _record_data(record)
    if data.get("status") != "finished":
        raise RecordError(
            f"phase-1 record {where} is not finished (status {data.get('status', 'missing')!r})"
        )
    phase = (data.get("meta") or {}).get("phase")
    if phase not in (None, "phase1"):
        raise RecordError(f"{where} is a {phase!r} record, not phase1")
    final_key = FINAL_KEYS[stop_point] if loss_key is None or stop_point == "best_val" else loss_key
    epoch_key = loss_key or "train_eval_loss"
    value = (data.get("final") or {}).get(final_key)
    epochs = data.get("epochs") or []
    if value is None and epochs:
        value = epochs[select_phase1_epoch(epochs, stop_point)].get(epoch_key)
    if value is None:
        raise RecordError(
            f"{where}: no final.{final_key} and no per-epoch {epoch_key!r} at the {stop_point!r} stopping "
            "point. Phase 1 must log the eval-mode cross-entropy on its training subset (the train-mode "
            "running average is not L*)"
        )
    value = float(value)
    if not math.isfinite(value):
        raise RecordError(f"{where}: L* = {value} is not finite")
    return value
