"""``protocol.pack=K``: train K k-fold runs in one process as one stacked network (:mod:`crelu.models.packed`).

A k-fold job with ``protocol.job=fold<f>`` (or ``protocol.fold=f``) and ``protocol.pack=K`` trains folds
``f .. min(f+K, protocol.folds)-1`` together, so a 10-fold sweep steps its jobs by K (fold0,fold5; launching
fold1..fold4 as well would train overlapping folds)::

    python -m crelu.train -m experiment=table1/crelu protocol=kfold protocol.pack=5 protocol.job=fold0,fold5
    make table1 ARGS="protocol.pack=5" JOBS=single,fold0,fold5     # Single jobs ignore pack

Each member is exactly its ordinary run (``crelu.training.train`` of the same config with ``pack=1``): the same
run key and directory, the same init (the member is built right after ``seed_everything(train.seed)``), its own
fold split, normalisation and data generator (so the same batches in the same order), and the loss
``sum_k mean CE_k`` gives each member the gradient of its own mean loss; SGD (momentum, weight decay) acts
element-wise, so the packed update is the K separate updates.  What differs: dropout masks come from one
shared RNG stream (still independent across members, but not the masks the separate runs would draw), and
floating-point summation order.  Each member writes an ordinary ``run.json``, ``checkpoint.pt`` (its own
weights and SGD state, loadable by ``load_model`` and resumable by ``train``) and ``test_logits.pt``;
``env.packed`` in the record says which folds were trained together.  Relaunching skips finished members and
resumes a pack from its epoch checkpoints; members whose checkpoints disagree (another epoch, mid-epoch) fall back
to ordinary sequential ``train`` calls.  A member that diverges is recorded as failed and the others go on;
:class:`~crelu.training.engine.DivergedError` is raised once the others have finished.
"""

from __future__ import annotations

import logging
import math
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from crelu.data import build_data
from crelu.models import build_model
from crelu.models.packed import PackedNet, merge_optimizer_states, split_optimizer_state, stack_inputs
from crelu.results.record import RecordError, SchemaVersionError, load_record, now_iso
from crelu.training import environment as env
from crelu.training.checkpoint import load_latest, save_checkpoint
from crelu.training.engine import DivergedError, EpochStats, _autocast
from crelu.training.loggers import make_logger
from crelu.training.optim import build_optimizer, lr_at, set_lr
from crelu.training.trainer import RunResult, _fail, _finalise, _fresh_record, _stats_dict, resolve_run_dir, train

log = logging.getLogger(__name__)


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
    results = train_packed(member_configs(cfg))
    for r in results[1:]:
        log.info("packed fold run %s: %s", r.run_dir, "skipped (already finished)" if r.skipped else r.status)
    return results[0]


def _check_compatible(cfgs: list[DictConfig]) -> None:
    def strip(c: DictConfig) -> dict:
        d = OmegaConf.to_container(c, resolve=True)
        return {**d, "protocol": {**d["protocol"], "fold": 0, "job": 0}, "output": {**d["output"], "run_dir": 0}}

    if any(c.protocol.name != "kfold" for c in cfgs):
        raise ValueError("train_packed packs k-fold runs (protocol.name=kfold)")
    ref = strip(cfgs[0])
    for c in cfgs[1:]:
        if strip(c) != ref:
            raise ValueError("packed runs must differ only in protocol.fold (same model, data, recipe and seed)")
    dirs = [str(resolve_run_dir(c)[0]) for c in cfgs]
    if len(set(dirs)) != len(dirs):
        raise ValueError(f"packed runs must have distinct run directories, got {dirs}")


def _pack_seed(seed: int, folds: list[int]) -> int:  # the pack's dropout stream
    return int(np.random.SeedSequence([seed, 0x9AC4, *folds]).generate_state(1)[0])


def _model_tensors(net: PackedNet) -> list[torch.Tensor]:
    return [*net.parameters(), *(b for b in net.buffers() if b.dim() > 0)]  # BN counters: PackedNet's lag


def _opt_tensors(net: PackedNet, optimizer) -> dict[tuple[int, str], torch.Tensor]:
    return {(j, name): v for j, p in enumerate(net.parameters()) for name, v in optimizer.state.get(p, {}).items()
            if torch.is_tensor(v) and v.dim() > 0}


def _snapshot(net: PackedNet, optimizer) -> tuple[list[torch.Tensor], dict]:
    return ([t.detach().clone() for t in _model_tensors(net)],
            {key: v.detach().clone() for key, v in _opt_tensors(net, optimizer).items()})


def _restore_members(net: PackedNet, optimizer, snap: tuple[list[torch.Tensor], dict], members: list[int]) -> None:
    """Put ``members``' slices of every parameter, buffer and optimiser tensor back to ``snap``.

    An optimiser tensor the step created (SGD's first momentum buffer) gets zero slices: SGD's next step then
    computes ``buf = 0 * momentum + d``, the ``buf = d`` of a first step (exact for ``dampening=0``).
    """
    model_snap, opt_snap = snap
    for t, s in zip(_model_tensors(net), model_snap):
        for i in members:
            t.data.chunk(net.k, 0)[i].copy_(s.chunk(net.k, 0)[i])
    for key, t in _opt_tensors(net, optimizer).items():
        s = opt_snap.get(key)
        for i in members:
            part = t.chunk(net.k, 0)[i]
            if s is None:
                part.zero_()
            else:
                part.copy_(s.chunk(net.k, 0)[i])
    net.note_skipped_bn_step(members)


def _pad_stack(got: list, bs: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Member batches (or None) -> packed input, labels (B, K) and the number of real rows per member.

    Counts stay on the host: a host->device copy every step would make the host wait for the device.
    """
    ref_x, ref_y = next(g for g in got if g is not None)
    xs, ys, counts = [], [], []
    for g in got:
        x, y = g if g is not None else (ref_x[:0], ref_y[:0])
        pad = bs - x.shape[0]
        if pad:
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
            y = torch.cat([y, y.new_zeros(pad)])
        xs.append(x)
        ys.append(y)
        counts.append(bs - pad)
    x = stack_inputs(xs)
    if ref_x.is_contiguous(memory_format=torch.channels_last) and ref_x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.stack(ys, 1), counts


def train_epoch_packed(model, optimizer, batches: list, gens: list[torch.Generator], *, device: torch.device,
                       amp_dtype: torch.dtype | None, max_steps: int | None = None, log_every: int = 50,
                       desc: str = "train", quiet: bool = False) -> list[EpochStats]:
    """One epoch of the K members: member ``k`` draws its batches from ``batches[k].epoch(gens[k])``.

    A step where some members have no batch (their epoch is shorter) or another batch size (``drop_last=False``)
    runs once per batch size with the other members sat out: their slices of weights, BN statistics and momentum
    are restored after the step, so every member sees exactly its own sequence of SGD steps.  Losses and errors
    are accumulated on the device; a NaN/Inf member loss is reported in its EpochStats, not raised.
    """
    net: PackedNet = getattr(model, "_orig_mod", model)
    k = net.k
    model.train()
    loss_sum = torch.zeros(k, device=device, dtype=torch.float64)
    wrong = torch.zeros(k, device=device, dtype=torch.int64)
    n = [0] * k
    totals = [len(b) if max_steps is None else min(len(b), max_steps) for b in batches]
    iters = [b.epoch(g, max_steps) for b, g in zip(batches, gens)]
    bar = tqdm(total=max(totals), desc=desc, leave=False, disable=quiet, unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    for step in range(1, max(totals) + 1):
        got = [next(it) if step <= totals[i] else None for i, it in enumerate(iters)]
        by_size: dict[int, list[int]] = {}
        for i, g in enumerate(got):
            if g is not None:
                by_size.setdefault(g[0].shape[0], []).append(i)
        for bs, members in by_size.items():
            part = [g if i in members else None for i, g in enumerate(got)]
            x, y, counts = _pad_stack(part, bs)
            sat_out = [i for i in range(k) if i not in members]
            snap = _snapshot(net, optimizer) if sat_out else None
            with _autocast(device, amp_dtype):
                logits = model(x)
            per = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none").mean(0)  # (K,)
            loss = per.sum() if not sat_out else per[members].sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            batch_loss, batch_wrong = per.detach().double() * bs, (logits.detach().argmax(2) != y).sum(0)
            if snap is not None:
                _restore_members(net, optimizer, snap, sat_out)
                keep = torch.tensor([c > 0 for c in counts], device=device)
                batch_loss, batch_wrong = torch.where(keep, batch_loss, 0.0), torch.where(keep, batch_wrong, 0)
            loss_sum += batch_loss
            wrong += batch_wrong
            for i in members:
                n[i] += bs
        bar.update(1)
        if not quiet and (step % log_every == 0 or step == max(totals)):
            running = (loss_sum.sum() / max(sum(n), 1)).item()  # one sync per log_every steps, for the bar only
            bar.set_postfix(loss=f"{running:.4f}", img_s=f"{sum(n) / (time.perf_counter() - t0):.0f}")
    bar.close()
    losses, errs = (loss_sum / torch.tensor([max(m, 1) for m in n], device=device)).tolist(), wrong.tolist()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    return [EpochStats(losses[i], 100.0 * errs[i] / max(n[i], 1), n[i], dt) for i in range(k)]


@torch.no_grad()
def evaluate_packed(model, batches: list, *, device: torch.device, amp_dtype: torch.dtype | None
                    ) -> list[EpochStats]:
    """Eval-mode mean cross-entropy and error of each member on its own evaluation set (sizes may differ)."""
    k = len(batches)
    model.eval()
    loss_sum = torch.zeros(k, device=device, dtype=torch.float64)
    wrong = torch.zeros(k, device=device, dtype=torch.int64)
    n = [0] * k
    iters = [b.epoch(None) for b in batches]
    t0 = time.perf_counter()
    while True:
        got = [next(it, None) for it in iters]
        if all(g is None for g in got):
            break
        bs = max(g[0].shape[0] for g in got if g is not None)
        x, y, counts = _pad_stack(got, bs)
        with _autocast(device, amp_dtype):
            logits = model(x)
        logits = logits.float()
        ce = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, K)
        miss = logits.argmax(2) != y
        if min(counts) < bs:  # padded rows (a shorter evaluation set or last batch) do not count
            valid = torch.arange(bs, device=device).view(-1, 1) < torch.tensor(counts, device=device).view(1, -1)
            ce, miss = torch.where(valid, ce, 0.0), miss & valid
        loss_sum += ce.sum(0).double()
        wrong += miss.sum(0)
        n = [a + b for a, b in zip(n, counts)]
    dt = time.perf_counter() - t0
    ls, ws, ns = loss_sum.tolist(), wrong.tolist(), n
    return [EpochStats(ls[i] / max(ns[i], 1), 100.0 * ws[i] / max(ns[i], 1), ns[i], dt) for i in range(k)]


def _finished(cfg: DictConfig, run_dir) -> RunResult | None:
    if cfg.output.overwrite or not (run_dir / "run.json").exists():
        return None
    try:
        rec = load_record(run_dir)
    except SchemaVersionError:
        raise  # written by another version of the suite: never overwritten silently (as train does)
    except RecordError as e:
        log.warning("%s; starting the run again", e)
        return None
    if rec.status != "finished":
        return None
    log.info("finished run found at %s: skipping (output.overwrite=true re-runs it)", run_dir)
    return RunResult(run_dir, "finished", rec.final, skipped=True, record=rec.data)


def train_packed(cfgs: list[DictConfig]) -> list[RunResult]:
    """Train K k-fold runs (configs differing only in ``protocol.fold``) together; one RunResult per config."""
    cfgs = [unpacked_config(c) for c in cfgs]
    _check_compatible(cfgs)
    dirs = [resolve_run_dir(c) for c in cfgs]
    results: list[RunResult | None] = [_finished(c, d[0]) for c, d in zip(cfgs, dirs)]
    todo = [i for i, r in enumerate(results) if r is None]
    for i in todo:
        if cfgs[i].output.overwrite and dirs[i][0].exists():
            shutil.rmtree(dirs[i][0])
    device = env.select_device(cfgs[0].train.device)
    states = [load_latest(dirs[i][0], map_location=device) if cfgs[i].train.checkpoint else None for i in todo]
    starts = {s["epoch"] if s else 0 for s in states}
    if len(todo) < 2 or len(starts) > 1 or any(s and s.get("mid_epoch") for s in states):
        if len(todo) > 1:
            log.warning("checkpoints of folds %s are at different points; training them one after another",
                        [cfgs[i].protocol.fold for i in todo])
        for i in todo:
            results[i] = train(cfgs[i])
        return results
    packed = _train_pack([cfgs[i] for i in todo], [dirs[i] for i in todo], states, device)
    for i, r in zip(todo, packed):
        results[i] = r
    failed = [r for r in packed if r.status == "failed"]
    if failed:
        raise DivergedError("; ".join(f"{r.run_dir}: {r.record['failure']['message']}" for r in failed))
    return results


def _train_pack(cfgs: list[DictConfig], dirs: list, states: list, device: torch.device) -> list[RunResult]:
    c0, k = cfgs[0], len(cfgs)
    folds = [c.protocol.fold for c in cfgs]
    if c0.train.threads:
        torch.set_num_threads(c0.train.threads)
    amp_dtype = env.autocast_dtype(c0.train.amp, device)
    channels_last = env.use_channels_last(c0.train.channels_last, device)
    start = states[0]["epoch"] if states[0] else 0
    models, gens, datas, records = [], [], [], []
    for cfg, (run_dir, key), state in zip(cfgs, dirs, states):
        run_dir.mkdir(parents=True, exist_ok=True)
        env.seed_everything(cfg.train.seed, cfg.train.deterministic)  # the member's init is its ordinary run's
        gens.append(env.data_generator(cfg.train.seed))
        model = build_model(cfg.model, cfg.dataset.num_classes)
        datas.append(build_data(cfg, device, channels_last))
        models.append(model.to(device))
        rec = _fresh_record(cfg, run_dir, key, model, device, datas[-1])
        rec.data["env"]["packed"] = {"k": k, "folds": folds}
        if state is not None:
            model.load_state_dict(state["model"])
            gens[-1].set_state(state["rng"]["data"])
            rec.data["epochs"] = state["record"]["epochs"][:start]
            for f in ("started_at", "wall_time_s"):
                rec.data[f] = state["record"][f]
            rec.data["resumes"] = [*state["record"].get("resumes", []), {"epoch": start, "at": now_iso()}]
            log.info("resuming %s from epoch %d (packed)", run_dir, start)
        rec.save()
        records.append(rec)
    net = PackedNet(models)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(c0.optim, net.parameters())
    if states[0] is not None:  # resume the SGD state, then the pack's shared dropout stream
        optimizer.load_state_dict(merge_optimizer_states([s["optimizer"] for s in states]))
        env.set_rng_state(states[0]["rng"], gens[0])
    else:
        torch.manual_seed(_pack_seed(c0.train.seed, folds))
    step_model = torch.compile(net) if c0.train.compile else net
    best = [s.get("best") if s else None for s in states]
    loggers = [make_logger(c.logger, r.meta, r.data["run_key"], r.data["config"]) for c, r in zip(cfgs, records)]
    alive = list(range(k))
    t_run = time.perf_counter() - max(r.data["wall_time_s"] for r in records)
    try:
        for epoch in range(start, c0.schedule.epochs):
            lr = lr_at(c0.schedule, c0.optim.lr, epoch)
            set_lr(optimizer, lr)
            trs = train_epoch_packed(step_model, optimizer, [d.train for d in datas], gens, device=device,
                                     amp_dtype=amp_dtype, max_steps=c0.train.max_steps_per_epoch,
                                     log_every=c0.train.log_every, quiet=c0.train.quiet,
                                     desc=f"epoch {epoch + 1}/{c0.schedule.epochs} (folds {folds})")
            rows = [{"epoch": epoch + 1, "lr": lr, **_stats_dict("train", tr)} for tr in trs]
            for name in ("val", "test"):
                if name in datas[0].evals:
                    evs = evaluate_packed(step_model, [d.evals[name] for d in datas], device=device,
                                          amp_dtype=amp_dtype)
                    for row, s in zip(rows, evs):
                        row.update(_stats_dict(name, s))
            member_states = net.member_state_dicts()
            opt_states = split_optimizer_state(optimizer.state_dict(), k)
            for i in list(alive):
                rec, row = records[i], rows[i]
                if not math.isfinite(trs[i].loss):
                    alive.remove(i)
                    _fail(rec, DivergedError(f"training loss is {trs[i].loss} (NaN/Inf) in epoch {epoch + 1}"),
                          len(rec.epochs), loggers[i])
                    continue
                row.update(time_s=trs[i].time_s, images_per_s=trs[i].images_per_s)
                rec.epochs.append(row)
                rec.data["wall_time_s"] = time.perf_counter() - t_run
                if cfgs[i].protocol.stop_point == "best_val" and "val_error" in row and (
                        best[i] is None or row["val_error"] < best[i]["val_error"]):
                    best[i] = {"epoch": epoch + 1, "val_error": row["val_error"],
                               "model": {n: v.detach().cpu().clone() for n, v in member_states[i].items()}}
                if not c0.train.quiet:
                    msg = " ".join(f"{kk}={v:.4g}" for kk, v in row.items() if kk not in ("epoch", "time_s"))
                    print(f"[{rec.data['run_key']}] epoch {epoch + 1}/{c0.schedule.epochs} {msg}", flush=True)
                loggers[i].log({kk: v for kk, v in row.items() if kk != "epoch"}, step=epoch + 1)
                if cfgs[i].train.checkpoint:
                    save_checkpoint(rec.run_dir, {"epoch": epoch + 1, "config": rec.data["config"],
                                                  "model": member_states[i], "optimizer": opt_states[i],
                                                  "rng": env.rng_state(gens[i]), "record": rec.data,
                                                  "best": best[i]})
                rec.save()
            if not alive:
                break
    except BaseException as e:
        for i in alive:
            _fail(records[i], e, len(records[i].epochs), loggers[i])
        raise
    nets = net.unpack()
    out = []
    for i, (cfg, rec) in enumerate(zip(cfgs, records)):
        if i not in alive:
            out.append(RunResult(rec.run_dir, "failed", {}, resumed_from_epoch=start, record=rec.data))
            continue
        member = nets[i].to(memory_format=torch.channels_last) if channels_last else nets[i]
        final = _finalise(cfg, member, member, datas[i], rec, best[i], "schedule_end", device, amp_dtype)
        loggers[i].summary(final)
        loggers[i].finish(0)
        out.append(RunResult(rec.run_dir, "finished", final, resumed_from_epoch=start, record=rec.data))
    return out
