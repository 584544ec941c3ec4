"""``train(cfg) -> RunResult``: one training run, from config to run record, resumable.

The run directory is ``output.run_dir`` or ``output.root/<profile>/<run key>`` (see :mod:`crelu.results.runkey`).
A finished run there is skipped (``output.overwrite=true`` re-runs it); an unfinished one resumes from its last
checkpoint (model, optimiser, epoch, every RNG including the data-order generator).  Each epoch appends to
``run.json`` and rewrites ``checkpoint.pt`` atomically; at the end ``test_logits.pt`` is written and the record
is marked finished.  A NaN/Inf loss stops the run, records the failure, keeps the last good checkpoint and raises
:class:`~crelu.training.engine.DivergedError`.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from crelu.data import build_data
from crelu.models import build_model, check_input_size
from crelu.results.io import atomic_torch_save
from crelu.results.record import LOGITS_NAME, RecordError, RunRecord, SchemaVersionError, load_record, now_iso
from crelu.results.runkey import run_key, run_meta
from crelu.training import distributed as ddp
from crelu.training import environment as env
from crelu.training.checkpoint import CKPT_NAME, load_latest, save_checkpoint
from crelu.training.engine import DivergedError, EpochProgress, EpochStats, evaluate, train_epoch
from crelu.training.loggers import make_logger
from crelu.training.optim import build_optimizer, lr_at, set_lr
from crelu.training.preemption import Preempted, PreemptionGuard

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    status: str  # finished | failed
    final: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False  # True when a finished record was found and nothing was trained
    resumed_from_epoch: int = 0
    record: dict[str, Any] = field(default_factory=dict)


def resolve_run_dir(cfg: DictConfig) -> tuple[Path, str]:
    key = run_key(cfg)
    if cfg.output.run_dir:
        return Path(cfg.output.run_dir), key
    return Path(cfg.output.root) / cfg.experiment.profile / key, key


def _stats_dict(prefix: str, s: EpochStats) -> dict[str, float]:
    return {f"{prefix}_loss": s.loss, f"{prefix}_error": s.error}


def _fresh_record(cfg: DictConfig, run_dir: Path, key: str, model, device, data) -> RunRecord:
    meta = run_meta(cfg)
    meta["phase"] = cfg.protocol.phase
    return RunRecord(run_dir, {
        "status": "running", "run_key": key, "meta": meta,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "git": env.git_info(), "params": sum(p.numel() for p in model.parameters()),
        "env": env.describe_device(device), "started_at": now_iso(), "finished_at": None, "wall_time_s": 0.0,
        "data": {**data.sizes(), "mean": data.mean, "std": data.std},
        "epochs": [], "final": {}, "protocol": {},
        "artifacts": {"test_logits": None, "checkpoint": CKPT_NAME if cfg.train.checkpoint else None},
        "failure": None,
    })


def train(cfg: DictConfig) -> RunResult:
    """Train one run described by ``cfg`` (a composed Hydra config) and write its record."""
    ddp.setup(cfg.train.device)  # joins the process group under torchrun/SLURM (crelu.training.distributed)
    run_dir, key = resolve_run_dir(cfg)
    if (run_dir / "run.json").exists() and not cfg.output.overwrite:
        try:
            rec = load_record(run_dir)
        except SchemaVersionError:
            raise  # written by another version of the suite: never overwritten silently
        except RecordError as e:
            log.warning("%s; continuing from the checkpoint if there is one", e)
        else:
            if rec.status == "finished":
                log.info("finished run found at %s: skipping (output.overwrite=true re-runs it)", run_dir)
                return RunResult(run_dir, "finished", rec.final, skipped=True, record=rec.data)
    ddp.barrier()  # DDP: every rank has read the record before rank 0 changes the directory
    if cfg.output.overwrite and run_dir.exists() and ddp.is_main():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ddp.barrier()

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = ddp.local_device(env.select_device(cfg.train.device))
    amp_dtype = env.autocast_dtype(cfg.train.amp, device)
    channels_last = env.use_channels_last(cfg.train.channels_last, device)
    env.seed_everything(ddp.rank_seed(cfg.train.seed), cfg.train.deterministic)
    gen = env.data_generator(cfg.train.seed)

    model = build_model(cfg.model, cfg.dataset.num_classes)  # validates the architecture before data loads
    check_input_size(model, cfg.dataset.image_size, cfg.dataset.name)
    data = ddp.shard_bundle(build_data(cfg, device, channels_last))
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optim, model.parameters())
    step_model = torch.compile(model) if cfg.train.compile else model
    train_model = ddp.wrap(step_model, device)  # DDP: gradients averaged over ranks; step_model itself otherwise

    record = ddp.main_only(_fresh_record(cfg, run_dir, key, model, device, data))
    start_epoch, best, progress = 0, None, None
    state = load_latest(run_dir, map_location=device) if cfg.train.checkpoint else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        env.set_rng_state(state["rng"], gen)
        start_epoch = state["epoch"]
        record.data["epochs"] = state["record"]["epochs"][:start_epoch]
        record.data["started_at"] = state["record"]["started_at"]
        record.data["wall_time_s"] = state["record"]["wall_time_s"]
        record.data["resumes"] = [*state["record"].get("resumes", []), {"epoch": start_epoch, "at": now_iso()}]
        best = state.get("best")
        if state.get("mid_epoch"):  # redraw the epoch's order from its start state, skip the steps done
            progress = EpochProgress(**state["mid_epoch"]["progress"])
            gen.set_state(state["mid_epoch"]["gen_state"])
        log.info("resuming %s from epoch %d%s", run_dir, start_epoch,
                 f" step {progress.step}" if progress else "")
    record.save()

    logger = make_logger(cfg.logger if ddp.is_main() else ddp.NO_LOGGER, record.meta, key, record.data["config"])
    epochs = cfg.schedule.epochs
    target = cfg.protocol.target_loss if cfg.protocol.phase == "phase2" else None
    stop_reason = "schedule_end"
    t_run = time.perf_counter() - record.data["wall_time_s"]
    def state_dict(epochs_done: int, **extra) -> dict[str, Any]:
        return {"epoch": epochs_done, "config": record.data["config"], "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "rng": env.rng_state(gen), "record": record.data,
                "best": best, **extra}

    guard = PreemptionGuard().__enter__()
    try:
        for epoch in range(start_epoch, epochs):
            lr = lr_at(cfg.schedule, cfg.optim.lr, epoch)
            set_lr(optimizer, lr)
            gen_at_epoch_start = gen.get_state()

            def mid_epoch_checkpoint(p: EpochProgress, epoch=epoch, gen_state=gen_at_epoch_start) -> None:
                if cfg.train.checkpoint and ddp.is_main():
                    save_checkpoint(run_dir, state_dict(epoch, mid_epoch={"progress": dataclasses.asdict(p),
                                                                          "gen_state": gen_state}))
                if guard.requested:
                    if guard.keep_going():
                        guard.signum = None  # SIGTERM under submitit: checkpointed, keep going (USR1 follows)
                    else:
                        raise Preempted(guard.signum)

            tr = train_epoch(train_model, optimizer, data.train, gen=gen, device=device, amp_dtype=amp_dtype,
                             max_steps=cfg.train.max_steps_per_epoch, log_every=cfg.train.log_every,
                             desc=f"epoch {epoch + 1}/{epochs}", quiet=cfg.train.quiet, progress=progress,
                             checkpoint_every=cfg.train.checkpoint_every_steps, on_checkpoint=mid_epoch_checkpoint,
                             stop_requested=lambda: guard.requested)
            progress = None
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, **_stats_dict("train", tr)}
            for name in ("val", "test"):
                if name in data.evals:
                    s, _, _ = evaluate(step_model, data.evals[name], device=device, amp_dtype=amp_dtype)
                    row.update(_stats_dict(name, s))
            row.update(time_s=tr.time_s, images_per_s=tr.images_per_s)
            record.epochs.append(row)
            record.data["wall_time_s"] = time.perf_counter() - t_run
            if cfg.protocol.stop_point == "best_val" and "val_error" in row and (
                    best is None or row["val_error"] < best["val_error"]):
                best = {"epoch": epoch + 1, "val_error": row["val_error"],
                        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
            if not cfg.train.quiet and ddp.is_main():
                msg = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("epoch", "time_s"))
                print(f"[{key}] epoch {epoch + 1}/{epochs} {msg}", flush=True)
            logger.log({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
            if cfg.train.checkpoint and ddp.is_main():
                save_checkpoint(run_dir, state_dict(epoch + 1))
            record.save()
            if target is not None and row.get("val_loss", float("inf")) <= target:
                stop_reason = "target_loss_reached"
                break
            if guard.requested and not guard.keep_going():
                raise Preempted(guard.signum)  # the epoch-end checkpoint above is the resume point
    except Preempted as e:
        _fail(record, e, len(record.epochs), logger, status="interrupted")
        guard.hand_over(e.signum)
    except DivergedError as e:
        _fail(record, e, len(record.epochs), logger)
        raise DivergedError(f"{e} in epoch {len(record.epochs) + 1} of {run_dir}; the last good checkpoint "
                            f"(epoch {len(record.epochs)}) is kept and the failure is recorded in run.json") from None
    except BaseException as e:
        _fail(record, e, len(record.epochs), logger)
        raise
    finally:
        guard.__exit__()

    final = _finalise(cfg, model, step_model, data, record, best, stop_reason, device, amp_dtype)
    logger.summary(final)
    logger.finish(0)
    return RunResult(run_dir, "finished", final, resumed_from_epoch=start_epoch, record=record.data)


def _fail(record: RunRecord, e: BaseException, epoch: int, logger, status: str | None = None) -> None:
    record.data["status"] = status or ("interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
    record.data["failure"] = {"type": type(e).__name__, "message": str(e), "epoch": epoch + 1, "at": now_iso()}
    record.save()
    logger.finish(1)


def _finalise(cfg, model, step_model, data, record: RunRecord, best, stop_reason, device, amp_dtype) -> dict:
    """Final evaluation: test logits, eval-mode train loss (Single's L*), and the record marked finished."""
    last = record.epochs[-1] if record.epochs else {}
    test, logits, labels = evaluate(step_model, data.evals["test"], device=device, amp_dtype=amp_dtype,
                                    keep_logits=cfg.train.save_logits)
    final = {"epoch": len(record.epochs), "train_loss": last.get("train_loss"),
             "train_error": last.get("train_error"), **_stats_dict("test", test), "stop_reason": stop_reason}
    if "train_eval" in data.evals:  # eval-mode pass over the training images (Single's L*, Table 1 train)
        train_eval, _, _ = evaluate(step_model, data.evals["train_eval"], device=device, amp_dtype=amp_dtype)
        final.update(_stats_dict("train_eval", train_eval))
    final.update(data.final_metrics(step_model, device=device, amp_dtype=amp_dtype))
    if "val" in data.evals:
        val, _, _ = evaluate(step_model, data.evals["val"], device=device, amp_dtype=amp_dtype)
        final.update(_stats_dict("val", val))
    if best is not None and cfg.protocol.stop_point == "best_val":
        # Single phase 1 at the best-validation point: L* is the eval-mode loss of *that* model.
        current = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best["model"])
        at_best, _, _ = evaluate(step_model, data.evals["train_eval"], device=device, amp_dtype=amp_dtype)
        model.load_state_dict(current)
        final.update(best_val_epoch=best["epoch"], best_val_error=best["val_error"],
                     best_train_eval_loss=at_best.loss)
    if logits is not None and ddp.is_main():
        atomic_torch_save({"logits": logits, "labels": labels}, record.run_dir / LOGITS_NAME)
        record.data["artifacts"]["test_logits"] = LOGITS_NAME
    record.data.update(status="finished", final=final, finished_at=now_iso())
    record.save()
    return final
