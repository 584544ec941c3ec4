"""One run inside the lifecycle (:mod:`crelu.training.run`): what a protocol asks for (:class:`RunSpec`),
the state the lifecycle holds for it (:class:`Member`), and its record -- fresh, resumed, failed, finalised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from crelu.data.fingerprint import data_fingerprint
from crelu.evaluation.tenpatch import crop_error_counts, errors_from_counts
from crelu.results.io import atomic_torch_save
from crelu.results.record import LOGITS_NAME, RunRecord, now_iso
from crelu.results.runkey import run_meta
from crelu.training import distributed as ddp
from crelu.training import environment as env
from crelu.training.checkpoint import CKPT_NAME
from crelu.training.engine import EpochStats, evaluate
from crelu.training.seeds import JobSeeds

log = logging.getLogger(__name__)


StopRule = Callable[[dict[str, Any]], "str | None"]


@dataclass
class RunResult:
    run_dir: Path
    status: str  # finished | failed
    final: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False  # True when a finished record was found and nothing was trained
    resumed_from_epoch: int = 0
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSpec:
    """What a protocol asks the lifecycle to train.

    ``phase`` names a Single phase (``phase1``: train without the hold-out; ``phase2``: train on everything and
    monitor the hold-out): it picks the data split and is stored as ``meta.phase``.  ``stop_when(row)`` is the
    protocol's stopping rule, called after each epoch with the epoch's row; a non-empty string it returns ends
    training and becomes ``final.stop_reason``.  ``keep_best`` keeps the weights of the epoch with the lowest
    validation error and reports its eval-mode training loss (``final.best_train_eval_loss``).  ``protocol`` is
    written into the record's ``protocol`` block (e.g. Single phase 2's target loss).
    """

    cfg: DictConfig
    phase: str | None = None
    run_dir: Path | None = None
    stop_when: StopRule | None = None
    keep_best: bool = False
    protocol: dict[str, Any] = field(default_factory=dict)


@dataclass
class Member:
    """One run of a :func:`train_runs` call, and everything the lifecycle holds for it."""

    index: int
    spec: RunSpec
    run_dir: Path
    key: str
    state: dict[str, Any] | None = None  # the checkpoint resumed from
    seeds: JobSeeds | None = None
    gen: torch.Generator | None = None
    model: torch.nn.Module | None = None
    data: Any = None
    record: RunRecord | None = None
    logger: Any = None
    best: dict[str, Any] | None = None
    stop_reason: str = "schedule_end"
    failed: bool = False

    @property
    def cfg(self) -> DictConfig:
        return self.spec.cfg

    def position(self) -> tuple[int, int | None]:
        s = self.state
        if s is None:
            return (0, None)
        mid = s.get("mid_epoch")
        return (s["epoch"], mid["progress"]["step"] if mid else None)


def stats_dict(prefix: str, s: EpochStats) -> dict[str, float]:
    return {f"{prefix}_loss": s.loss, f"{prefix}_error": s.error}


def fresh_record(m: Member, device) -> RunRecord:
    cfg, data = m.cfg, m.data
    fingerprint = data_fingerprint(cfg.dataset)
    meta = run_meta(cfg, fingerprint["digest"])
    meta["phase"] = m.spec.phase
    return RunRecord(m.run_dir, {
        "status": "running", "run_key": m.key, "meta": meta,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "git": env.git_info(), "params": sum(p.numel() for p in m.model.parameters()),
        "env": env.describe_device(device), "started_at": now_iso(), "finished_at": None, "wall_time_s": 0.0,
        "data": {**data.sizes(), "mean": data.mean, "std": data.std, "fingerprint": fingerprint},
        "seeds": m.seeds.as_dict(),
        "epochs": [], "final": {}, "protocol": dict(m.spec.protocol),
        "artifacts": {"test_logits": None, "checkpoint": CKPT_NAME if cfg.train.checkpoint else None},
        "failure": None,
    })


def resume_record(m: Member) -> None:
    s, rec = m.state, m.record
    start = s["epoch"]
    rec.data["epochs"] = s["record"]["epochs"][:start]
    for f in ("started_at", "wall_time_s"):
        rec.data[f] = s["record"][f]
    rec.data["resumes"] = [*s["record"].get("resumes", []), {"epoch": start, "at": now_iso()}]
    m.best = s.get("best")


def fail(m: Member, e: BaseException, status: str | None = None) -> None:
    m.failed = True
    rec = m.record
    rec.data["status"] = status or ("interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
    rec.data["failure"] = {"type": type(e).__name__, "message": str(e), "epoch": len(rec.epochs) + 1,
                           "at": now_iso()}
    rec.save()
    m.logger.finish(1)


def finalise(m: Member, model, eval_model, device, amp_dtype) -> dict[str, Any]:
    """Final evaluation: test logits, eval-mode train loss (Single's L*), and the record marked finished."""
    cfg, data, record = m.cfg, m.data, m.record
    t0 = time.perf_counter()
    steps = sum(e.get("steps", 1) for e in record.epochs)
    if not record.epochs or steps < 1:  # config.checks.check_steps refuses such runs; a finished record never lies
        raise RuntimeError(f"{m.run_dir}: no optimisation step was taken; refusing to mark the run finished")
    last = record.epochs[-1]
    test, logits, labels = evaluate(eval_model, data.evals["test"], device=device, amp_dtype=amp_dtype,
                                    keep_logits=cfg.train.save_logits)
    final = {"epoch": len(record.epochs), "train_loss": last.get("train_loss"),
             "train_error": last.get("train_error"), **stats_dict("test", test), "test_images": test.examples,
             "stop_reason": m.stop_reason}
    if "train_eval" in data.evals:  # eval-mode pass over the training images (Single's L*, Table 1 train)
        train_eval, _, _ = evaluate(eval_model, data.evals["train_eval"], device=device, amp_dtype=amp_dtype)
        final.update(stats_dict("train_eval", train_eval))
    if data.crop_eval is not None:  # ImageNet: centre crop and 10 patches (crelu.evaluation.tenpatch)
        ce = data.crop_eval
        counts = crop_error_counts(eval_model, ce.batches.epoch(None), size=ce.image_size, eval_mode=ce.eval_mode,
                                   amp_dtype=amp_dtype, channels_last=ce.channels_last)
        final.update(errors_from_counts(ddp.reduce_counts(counts)))
    if "val" in data.evals:
        val, _, _ = evaluate(eval_model, data.evals["val"], device=device, amp_dtype=amp_dtype)
        final.update(stats_dict("val", val))
    if m.best is not None and m.spec.keep_best:
        # Single phase 1 at the best-validation point: L* is the eval-mode loss of *that* model.
        current = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(m.best["model"])
        at_best, _, _ = evaluate(eval_model, data.evals["train_eval"], device=device, amp_dtype=amp_dtype)
        model.load_state_dict(current)
        final.update(best_val_epoch=m.best["epoch"], best_val_error=m.best["val_error"],
                     best_train_eval_loss=at_best.loss)
    if logits is not None and ddp.is_main():
        atomic_torch_save({"logits": logits, "labels": labels}, record.run_dir / LOGITS_NAME)
        record.data["artifacts"]["test_logits"] = LOGITS_NAME
    record.data["wall_time_s"] = record.data.get("wall_time_s", 0.0) + (time.perf_counter() - t0)
    record.data.update(status="finished", final=final, finished_at=now_iso())
    record.save()
    return final

