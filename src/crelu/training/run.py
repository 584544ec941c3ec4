"""THE run lifecycle: find, skip, lock, resume, train, record, fail, finalise -- for every kind of run.

Every training run of the suite goes through :func:`train_runs`: an ordinary run, each phase of the Single
protocol, and K k-fold runs packed into one network (``protocol.pack``).  It owns

* the **run directory**: ``output.run_dir`` or ``output.root/<profile>/<run key>``
  (:mod:`crelu.results.runkey`).  A finished record there is skipped (``output.overwrite=true`` re-runs it);
* an exclusive **lock** on the directory (:mod:`crelu.training.lock`), so two identical jobs never train the same run at
  once: the second waits (``output.lock_wait_s``) and then skips the finished run or resumes it;
* **resume** from the last checkpoint (model, optimiser, epoch, every RNG, mid-epoch position);
* the **epoch loop** around :func:`crelu.training.engine.train_epoch` (the one training loop), with per-epoch
  rows, checkpoints (every epoch and every ``train.checkpoint_every_steps`` steps), preemption
  (:mod:`crelu.training.preemption`) and the protocol's stopping rule ``stop_when(row)``;
* **failure**: a NaN/Inf loss, an exception or a signal is written into ``run.json`` (status ``failed`` or
  ``interrupted``) before it propagates; the last good checkpoint is kept;
* **finalisation**: the test logits, eval-mode losses, ImageNet's centre-crop / 10-patch errors, and the
  record marked finished.

Protocols (:mod:`crelu.protocols.runner`) decide *what* to train: which phase (and so which split), where, and
when to stop.  Nothing here knows a protocol's internals.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from crelu.config.checks import check_steps
from crelu.data import build_data
from crelu.data.fingerprint import data_fingerprint
from crelu.models import build_model, check_input_size
from crelu.models.packed import PackedNet, merge_optimizer_states, split_optimizer_state
from crelu.results.record import RecordError, SchemaVersionError, load_record
from crelu.results.runkey import run_key
from crelu.training import distributed as ddp
from crelu.training import environment as env
from crelu.training.checkpoint import CKPT_NAME, discard_latest, load_latest, load_previous, save_checkpoint
from crelu.training.engine import DivergedError, EpochProgress, ModelStep, train_epoch
from crelu.training.lock import LOCK_NAME, RunLock
from crelu.training.loggers import make_logger, run_group, run_name
from crelu.training.member import (
    Member,
    RunResult,
    RunSpec,
    StopRule,
    fail,
    finalise,
    fresh_record,
    resume_record,
    stats_dict,
)
from crelu.training.optim import build_optimizer, lr_at, set_lr
from crelu.training.packed import PackedStep, check_packable, pack_seed
from crelu.training.preemption import Preempted, PreemptionGuard
from crelu.training.progress import format_duration
from crelu.training.seeds import job_seeds, pack_dropout_seed

log = logging.getLogger(__name__)

def resolve_run_dir(cfg: DictConfig) -> tuple[Path, str]:
    """The run directory and run key of ``cfg``; the key includes the data's fingerprint (read once per process)."""
    key = run_key(cfg, data_fingerprint(cfg.dataset)["digest"])
    if cfg.output.run_dir:
        return Path(cfg.output.run_dir), key
    return Path(cfg.output.root) / cfg.experiment.profile / key, key


def finished_run(run_dir: Path, overwrite: bool = False) -> RunResult | None:
    """The finished run in ``run_dir`` (to be skipped), else None.  The one skip rule of the suite."""
    if overwrite or not (run_dir / "run.json").exists():
        return None
    try:
        rec = load_record(run_dir)
    except SchemaVersionError:
        raise  # written by another version of the suite: never overwritten silently
    except RecordError as e:
        log.warning("%s; continuing from the checkpoint if there is one", e)
        return None
    if rec.status != "finished":
        return None
    log.info("finished run found at %s: skipping (output.overwrite=true re-runs it)", run_dir)
    return RunResult(run_dir, "finished", rec.final, skipped=True, record=rec.data)


def train(cfg: DictConfig, *, phase: str | None = None, run_dir: str | os.PathLike | None = None,
          stop_when: StopRule | None = None, keep_best: bool = False, protocol: dict | None = None) -> RunResult:
    """Train one run described by ``cfg`` (a composed Hydra config) and write its record (see :class:`RunSpec`)."""
    spec = RunSpec(cfg, phase, Path(run_dir) if run_dir is not None else None, stop_when, keep_best,
                   dict(protocol or {}))
    return train_runs([spec])[0]


def train_runs(specs: Sequence[RunSpec | DictConfig]) -> list[RunResult]:
    """Train one run, or K k-fold runs packed into one network; one :class:`RunResult` per spec, in order."""
    specs = [s if isinstance(s, RunSpec) else RunSpec(s) for s in specs]
    if len(specs) > 1:
        check_packable([s.cfg for s in specs])
        if any(s.stop_when or s.keep_best or s.phase for s in specs):
            raise ValueError("packed training takes plain k-fold runs (no phase, stopping rule or best-val model)")
    ddp.setup(specs[0].cfg.train.device)  # joins the process group under torchrun/SLURM
    if len(specs) > 1 and ddp.is_distributed():
        raise ValueError("protocol.pack > 1 is a single-process feature; use protocol.pack=1 under DDP")
    results: list[RunResult | None] = [None] * len(specs)
    members = []
    c0 = specs[0].cfg  # an impossible architecture is one clear error before any data is read
    check_input_size(build_model(c0.model, c0.dataset.num_classes), c0.dataset.image_size, c0.dataset.name)
    for i, spec in enumerate(specs):
        run_dir, key = resolve_run_dir(spec.cfg)
        run_dir = spec.run_dir or run_dir
        results[i] = finished_run(run_dir, spec.cfg.output.overwrite)
        if results[i] is None:
            members.append(Member(i, spec, run_dir, key))
    ddp.barrier()  # DDP: every rank has read the record before rank 0 changes the directory
    with contextlib.ExitStack() as stack:
        todo = []
        for m in members:
            if ddp.is_main():
                lock = RunLock(m.run_dir)
                waited = lock.acquire(m.cfg.output.lock_wait_s)
                stack.callback(lock.release)
                if waited and (done := finished_run(m.run_dir)) is not None:
                    results[m.index] = done  # the other job finished it while we waited
                    continue
                if m.cfg.output.overwrite:
                    for p in m.run_dir.iterdir():
                        if p.name != LOCK_NAME:
                            shutil.rmtree(p) if p.is_dir() else p.unlink()
            todo.append(m)
        ddp.barrier()
        if todo:
            for m, r in zip(todo, _train_members(todo)):
                results[m.index] = r
    failed = [r for r in results if r is not None and r.status == "failed"]
    if failed:
        raise DivergedError("; ".join(f"{r.run_dir}: {r.record['failure']['message']}" for r in failed))
    return results  # type: ignore[return-value]


def _train_members(members: list[Member]) -> list[RunResult]:
    c0 = members[0].cfg
    device = ddp.local_device(env.select_device(c0.train.device))
    for m in members:
        m.state = load_latest(m.run_dir, map_location=device) if m.cfg.train.checkpoint else None
    if len(members) > 1 and len({m.position() for m in members}) > 1:
        _align_pack(members, device)
    if len(members) > 1 and len({m.position() for m in members}) > 1:
        log.warning("checkpoints of %s are at different points (epoch, step): training them one after another",
                    [str(m.run_dir) for m in members])
        return [r for m in members for r in _train_members([m])]
    if c0.train.threads:
        torch.set_num_threads(c0.train.threads)
    amp_dtype = env.autocast_dtype(c0.train.amp, device)
    channels_last = env.use_channels_last(c0.train.channels_last, device)
    packed = len(members) > 1

    for m in members:
        cfg = m.cfg
        m.seeds = job_seeds(cfg, m.spec.phase)  # crelu.training.seeds: init, dropout and data order of this job
        env.seed_everything(ddp.rank_seed(m.seeds.init), cfg.train.deterministic)
        m.gen = torch.Generator().manual_seed(m.seeds.data)
        m.model = build_model(cfg.model, cfg.dataset.num_classes)  # (its input size was checked by train_runs)
        if m.seeds.rule == "per-job" and not packed:
            torch.manual_seed(ddp.rank_seed(m.seeds.dropout))
        m.data = build_data(cfg, device, channels_last, phase=m.spec.phase, rank=ddp.rank(), world=ddp.world_size())
        check_steps(cfg, m.data.train.num_examples)  # a run taking no optimisation step is refused
        m.model = m.model.to(device)
        if packed and m.state is not None:
            m.model.load_state_dict(m.state["model"])
    if packed:
        net: torch.nn.Module = PackedNet([m.model for m in members])
    else:
        net = members[0].model
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(c0.optim, net.parameters())
    step_model = torch.compile(net) if c0.train.compile else net

    progress = None
    if packed:
        if members[0].state is not None:  # the SGD state, then the pack's shared dropout stream
            optimizer.load_state_dict(merge_optimizer_states([m.state["optimizer"] for m in members]))
            env.set_rng_state(members[0].state["rng"], members[0].gen)
            for m in members[1:]:
                m.gen.set_state(m.state["rng"]["data"])
        elif members[0].seeds.rule == "shared":
            torch.manual_seed(pack_seed(c0.train.seed, [m.cfg.protocol.fold for m in members]))
        else:
            torch.manual_seed(pack_dropout_seed([m.seeds for m in members]))
        stepper = PackedStep(step_model, optimizer, [m.data.train for m in members], [m.gen for m in members],
                             device=device, amp_dtype=amp_dtype)
    else:
        m = members[0]
        if m.state is not None:
            net.load_state_dict(m.state["model"])
            optimizer.load_state_dict(m.state["optimizer"])
            env.set_rng_state(m.state["rng"], m.gen)
        stepper = ModelStep(ddp.wrap(step_model, device), optimizer, m.data.train, m.gen, device=device,
                            amp_dtype=amp_dtype, eval_model=step_model)  # DDP trains, the bare model evaluates
    folds = [m.cfg.protocol.fold for m in members]
    for m in members:
        m.record = ddp.main_only(fresh_record(m, device))
        if packed:
            m.record.data["env"]["packed"] = {"k": len(members), "folds": folds}
        if m.state is not None:
            resume_record(m)
        m.record.save()
        m.logger = make_logger(m.cfg.logger if ddp.is_main() else ddp.NO_LOGGER, m.record.meta, m.key,
                               m.record.data["config"], run_dir=m.run_dir, attempt=m.record.data["started_at"])
        if getattr(m.logger, "id", None):  # the record names its wandb run (the report links cells to it)
            m.record.data["wandb"] = {"id": m.logger.id, "group": run_group(m.record.meta),
                                      "name": run_name(m.record.meta), "mode": m.logger.mode}
            m.record.save()
    start = members[0].position()[0]
    if members[0].position()[1] is not None:  # mid-epoch: redraw the epoch's order from its start state
        parts = []
        for m in members:
            parts.append(EpochProgress.from_dict(m.state["mid_epoch"]["progress"]))
            m.gen.set_state(m.state["mid_epoch"]["gen_state"])
        progress = EpochProgress.stack(parts)
    if start or progress:
        log.info("resuming %s from epoch %d%s", ", ".join(str(m.run_dir) for m in members), start,
                 f" step {progress.step}" if progress else "")

    _epoch_loop(members, stepper, net, optimizer, start, progress, device)

    out = []
    nets = net.unpack() if packed else [net]
    for i, m in enumerate(members):
        if m.failed:
            out.append(RunResult(m.run_dir, "failed", {}, resumed_from_epoch=start, record=m.record.data))
            continue
        if packed:
            member = nets[i].to(memory_format=torch.channels_last) if channels_last else nets[i]
            model, eval_model = member, member
        else:
            model, eval_model = net, step_model
        final = finalise(m, model, eval_model, device, amp_dtype)
        m.logger.summary(final)
        m.logger.finish(0)
        out.append(RunResult(m.run_dir, "finished", final, resumed_from_epoch=start, record=m.record.data))
    return out


def _align_pack(members: list[Member], device) -> None:
    """Members of a pack killed between their checkpoint writes are one checkpoint apart: step the ones ahead
    back to their previous checkpoint when it is where the others are, so the pack resumes as one."""
    def order(pos: tuple[int, int | None]) -> tuple[int, int]:
        return (pos[0], pos[1] or 0)

    behind = min((m.position() for m in members), key=order)
    for m in members:
        if order(m.position()) != order(behind):
            prev = load_previous(m.run_dir, map_location=device)
            if prev is not None:
                back = Member(m.index, m.spec, m.run_dir, m.key, state=prev)
                if order(back.position()) == order(behind):
                    log.info("%s: one checkpoint ahead of its pack; resuming from checkpoint.prev.pt", m.run_dir)
                    discard_latest(m.run_dir)  # on disk as well: the next write keeps this one as .prev
                    m.state = prev


def _epoch_loop(members: list[Member], stepper, net, optimizer, start: int, progress, device) -> None:
    c0 = members[0].cfg
    packed = len(members) > 1
    epochs = c0.schedule.epochs
    active = [m for m in members]
    t_run = time.perf_counter() - max(m.record.data["wall_time_s"] for m in members)
    test_every = c0.train.eval_test_every

    def member_states() -> tuple[list[dict], list[dict]]:
        if packed:
            return net.member_state_dicts(), split_optimizer_state(optimizer.state_dict(), len(members))
        return [net.state_dict()], [optimizer.state_dict()]

    def state_dict(m: Member, model_sd, opt_sd, epochs_done: int, **extra) -> dict[str, Any]:
        return {"epoch": epochs_done, "config": m.record.data["config"], "model": model_sd, "optimizer": opt_sd,
                "rng": env.rng_state(m.gen), "record": m.record.data, "best": m.best, **extra}

    def eta(frac_of_epoch: float, epoch: int) -> str:  # the whole run's, not the epoch's
        done = (epoch - start) + frac_of_epoch
        elapsed = time.perf_counter() - t_epochs
        return format_duration(elapsed / done * (epochs - start - done) if done > 0 else float("nan"))

    guard = PreemptionGuard().__enter__()
    t_epochs = time.perf_counter()
    try:
        for epoch in range(start, epochs):
            lr = lr_at(c0.schedule, c0.optim.lr, epoch)
            set_lr(optimizer, lr)
            gen_starts = [m.gen.get_state() for m in members]

            def on_checkpoint(p: EpochProgress, epoch=epoch, gen_starts=gen_starts) -> None:
                if c0.train.checkpoint and ddp.is_main():
                    models, opts = member_states()
                    for i, m in enumerate(members):
                        if m in active:
                            mid = {"progress": p.member(i).as_dict(), "gen_state": gen_starts[i]}
                            save_checkpoint(m.run_dir, state_dict(m, models[i], opts[i], epoch, mid_epoch=mid))
                if guard.requested:
                    if guard.keep_going():
                        guard.signum = None  # SIGTERM under submitit: checkpointed, keep going (its signal follows)
                    else:
                        raise Preempted(guard.signum)

            desc = f"epoch {epoch + 1}/{epochs}" + (f" (folds {[m.cfg.protocol.fold for m in members]})"
                                                     if packed else "")
            trs = train_epoch(stepper, max_steps=c0.train.max_steps_per_epoch, log_every=c0.train.log_every,
                              desc=desc, quiet=c0.train.quiet, progress=progress,
                              checkpoint_every=c0.train.checkpoint_every_steps, on_checkpoint=on_checkpoint,
                              stop_requested=lambda: guard.requested, nan_check_every=c0.train.nan_check_every,
                              eta=lambda f, epoch=epoch: eta(f, epoch))
            progress = None
            rows = [{"epoch": epoch + 1, "lr": lr, **stats_dict("train", tr)} for tr in trs]
            last = epoch + 1 == epochs
            for name in ("val", "test"):
                if name not in members[0].data.evals:
                    continue
                if name == "test" and not (last or (test_every and (epoch + 1) % test_every == 0)):
                    continue
                evs = stepper.evaluate([m.data.evals[name] for m in members])
                for row, s in zip(rows, evs):
                    row.update(stats_dict(name, s))
            models, opts = member_states()
            for i, m in enumerate(members):
                if m not in active:
                    continue
                row, tr = rows[i], trs[i]
                if not math.isfinite(tr.loss):  # a packed member diverged alone
                    active.remove(m)
                    fail(m, DivergedError(f"training loss is {tr.loss} (NaN/Inf) in epoch {epoch + 1}"))
                    continue
                row.update(steps=tr.steps, time_s=tr.time_s, images_per_s=tr.images_per_s)
                rec = m.record
                rec.epochs.append(row)
                rec.data["wall_time_s"] = time.perf_counter() - t_run
                if m.spec.keep_best and "val_error" in row and (m.best is None or row["val_error"] <
                                                                m.best["val_error"]):
                    m.best = {"epoch": epoch + 1, "val_error": row["val_error"],
                              "model": {k: v.detach().to("cpu", copy=True) for k, v in models[i].items()}}
                if not c0.train.quiet and ddp.is_main():
                    msg = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("epoch", "time_s", "steps"))
                    print(f"[{m.key}] epoch {epoch + 1}/{epochs} {msg} (run ETA {eta(1.0, epoch)})", flush=True)
                m.logger.log({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
                if m.cfg.train.checkpoint and ddp.is_main():
                    save_checkpoint(m.run_dir, state_dict(m, models[i], opts[i], epoch + 1))
                rec.save()
                if m.spec.stop_when is not None and (reason := m.spec.stop_when(row)):
                    m.stop_reason = reason
                    active.remove(m)
            if not active:
                break
            if guard.requested and not guard.keep_going():
                raise Preempted(guard.signum)  # the epoch-end checkpoint above is the resume point
    except Preempted as e:
        for m in active:
            fail(m, e, status="interrupted")
        guard.hand_over(e.signum)
    except DivergedError as e:
        for m in active:
            fail(m, e)
        m0 = active[0] if active else members[0]
        done = len(m0.record.epochs)
        kept = (f"the last good checkpoint (epoch {done}) is kept" if (m0.run_dir / CKPT_NAME).exists()
                else "no checkpoint had been written yet")
        raise DivergedError(f"{e} in epoch {done + 1} of {', '.join(str(m.run_dir) for m in active)}; {kept} "
                            "and the failure is recorded in run.json") from None
    except BaseException as e:
        for m in active:
            fail(m, e)
        raise
    finally:
        guard.__exit__()


