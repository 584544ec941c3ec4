"""Run one job of a protocol: a plain/fold run is one ``train``; the Single protocol is two, in one job.

Single (docs/recipes.md, INFERRED details follow Goodfellow et al. 2013's maxout code):

1. phase 1 trains on the training set minus the stratified hold-out (``protocol.holdout``) and records
   L* = eval-mode mean cross-entropy on its own training subset at the stopping point (``protocol.stop_point``:
   end of schedule, or the best hold-out error);
2. phase 2 re-initialises and trains on the whole training set, evaluating the hold-out loss after each epoch,
   and stops at the first epoch where it is <= L*; if that never happens it runs the full schedule and the
   record says ``reached: false`` (tables flag the cell).

The job's directory holds ``phase1/`` and ``phase2/`` (full run records, resumable) and a top-level
``run.json`` whose ``final`` is phase 2's and whose ``protocol`` block holds L*, the reached flag and the
eval-mode error on the whole training set (Table 1's "Single train" column).
"""

from __future__ import annotations

import logging
import shutil

from omegaconf import DictConfig, OmegaConf

from crelu.config.schema import validate_config
from crelu.protocols.single import phase1_target
from crelu.protocols.tuning import apply_tuned
from crelu.results.record import RunRecord, now_iso
from crelu.training.lock import RunLock
from crelu.training.run import RunResult, RunSpec, finished_run, resolve_run_dir, train, train_runs

log = logging.getLogger(__name__)


def _phase_cfg(cfg: DictConfig) -> DictConfig:
    c = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.set_struct(c, True)
    c.output.overwrite = False  # the top-level decides; phases resume or skip
    return c


def reach_target(l_star: float):
    """Phase 2's stopping rule: the first epoch whose hold-out (``val``) loss is <= L*."""
    def stop_when(row: dict) -> str | None:
        return "target_loss_reached" if row.get("val_loss", float("inf")) <= l_star else None

    return stop_when


def run_single(cfg: DictConfig) -> RunResult:
    top, key = resolve_run_dir(cfg)
    done = finished_run(top, cfg.output.overwrite)
    if done is not None:
        return done
    lock = RunLock(top)
    try:
        if lock.acquire(cfg.output.lock_wait_s) and (done := finished_run(top)) is not None:
            return done  # an identical job finished it while we waited
        return _run_single(cfg, top, key)
    finally:
        lock.release()


def _run_single(cfg: DictConfig, top, key: str) -> RunResult:
    if cfg.output.overwrite:
        for sub in ("phase1", "phase2"):
            shutil.rmtree(top / sub, ignore_errors=True)
        (top / "run.json").unlink(missing_ok=True)
    phase_cfg = _phase_cfg(cfg)
    p1 = train(phase_cfg, phase="phase1", run_dir=top / "phase1", keep_best=cfg.protocol.stop_point == "best_val")
    l_star = phase1_target(p1.record, cfg.protocol.stop_point)
    p2 = train(phase_cfg, phase="phase2", run_dir=top / "phase2", stop_when=reach_target(l_star),
               protocol={"target_loss": l_star})
    reached = p2.final["stop_reason"] == "target_loss_reached"
    if not reached:
        log.warning("Single phase 2 of %s never reached L*=%.4f on the hold-out; flagged in the record", key, l_star)
    meta = {**p2.record["meta"], "phase": None}
    rec = RunRecord(top, {
        "status": "finished", "run_key": key, "meta": meta,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "git": p2.record.get("git"), "params": p2.record.get("params"), "env": p2.record.get("env"),
        "started_at": p1.record.get("started_at"), "finished_at": now_iso(),
        "wall_time_s": p1.record.get("wall_time_s", 0.0) + p2.record.get("wall_time_s", 0.0),
        "data": p2.record.get("data"), "seeds": {"phase1": p1.record.get("seeds"), "phase2": p2.record.get("seeds")},
        "wandb": p2.record.get("wandb"), "epochs": [],
        "final": p2.final,
        "protocol": {
            "L_star": l_star, "stop_point": cfg.protocol.stop_point, "reached": reached,
            "stop_epoch": p2.final["epoch"], "phase1_epochs": p1.final["epoch"],
            "train_error_full": p2.final["train_eval_error"], "train_loss_full": p2.final["train_eval_loss"],
            "phase1": {k: p1.final.get(k) for k in ("test_error", "val_error", "val_loss", "train_eval_loss")},
        },
        "artifacts": {"test_logits": "phase2/test_logits.pt" if p2.record.get("artifacts", {}).get("test_logits")
                      else None, "phases": ["phase1", "phase2"]},
        "failure": None,
    })
    rec.save()
    return RunResult(top, "finished", p2.final, record=rec.data)


class SkippedJob(Exception):
    """A sweep job that does not exist under the chosen profile (e.g. fold 7 when protocol.folds=3)."""


def resolve_job(cfg: DictConfig) -> DictConfig:
    """Turn ``protocol.job`` (``single`` | ``fold<K>``, used by table sweeps) into protocol name and fold."""
    job = cfg.protocol.job
    if job is None:
        return cfg
    cfg = cfg.copy()
    if job in ("single", "tune"):
        cfg.protocol.name, cfg.protocol.fold = job, None
    elif job.startswith("fold") and job[4:].isdigit():
        cfg.protocol.name, cfg.protocol.fold = "kfold", int(job[4:])
        if cfg.protocol.fold >= cfg.protocol.folds:
            raise SkippedJob(f"protocol.job={job} but protocol.folds={cfg.protocol.folds}")
    else:
        raise ValueError(f"protocol.job must be 'single', 'tune' or 'fold<K>', got {job!r}")
    cfg.protocol.job = None
    return cfg


def run(cfg: DictConfig) -> RunResult:
    """Run the job ``cfg`` describes under its protocol."""
    validate_config(cfg)
    cfg = apply_tuned(resolve_job(cfg))  # optim.lr_from: the row's learning rate picked by make tune
    if cfg.protocol.pack != 1:  # k-fold: this job trains folds fold..fold+pack-1 together (crelu.training.packed)
        if cfg.protocol.name == "kfold":
            return run_packed(cfg)
        cfg = unpacked_config(cfg)  # other protocols ignore pack (and keep their ordinary run key)
    if cfg.protocol.name == "single":
        return run_single(cfg)
    return train(cfg)


def unpacked_config(cfg: DictConfig) -> DictConfig:
    """A resolved copy of ``cfg`` with ``protocol.pack=1`` (the config, and run key, of an ordinary run)."""
    c = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.set_struct(c, True)
    c.protocol.pack = 1
    return c


def member_configs(cfg: DictConfig) -> list[DictConfig]:
    """The folds a packed k-fold job trains: ``fold .. min(fold+pack, folds)-1``, each an ordinary config."""
    p = cfg.protocol
    if p.pack < 1:
        raise ValueError(f"protocol.pack must be >= 1, got {p.pack}")
    if p.name != "kfold" or p.fold is None:
        raise ValueError(f"protocol.pack={p.pack} packs k-fold runs; got protocol.name={p.name}, fold={p.fold}")
    if cfg.output.run_dir:
        raise ValueError("output.run_dir names one run directory; a packed job writes one per fold under "
                         "output.root (drop output.run_dir or use protocol.pack=1)")
    out = []
    for fold in range(p.fold, min(p.fold + p.pack, p.folds)):
        c = unpacked_config(cfg)
        c.protocol.fold, c.protocol.job = fold, None
        out.append(c)
    return out


def run_packed(cfg: DictConfig) -> RunResult:
    """Runner entry point: train the job's folds together; the result of the job's own fold is returned."""
    results = train_runs([RunSpec(c) for c in member_configs(cfg)])
    for r in results[1:]:
        log.info("packed fold run %s: %s", r.run_dir, "skipped (already finished)" if r.skipped else r.status)
    return results[0]


def train_packed(cfgs: list[DictConfig]) -> list[RunResult]:
    """Train K k-fold runs (configs differing only in ``protocol.fold``) together; one RunResult per config."""
    return train_runs([RunSpec(unpacked_config(c)) for c in cfgs])
