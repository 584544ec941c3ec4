"""``protocol.pack=K``: K k-fold runs trained in one process as one stacked network (:mod:`crelu.models.packed`).

A k-fold job with ``protocol.job=fold<f>`` (or ``protocol.fold=f``) and ``protocol.pack=K`` trains folds
``f .. min(f+K, protocol.folds)-1`` together, so a 10-fold sweep steps its jobs by K (fold0,fold5; launching
fold1..fold4 as well would train overlapping folds)::

    python -m crelu.train -m experiment=table1/crelu protocol=kfold protocol.pack=5 protocol.job=fold0,fold5
    make table1 ARGS="protocol.pack=5" JOBS=single,fold0,fold5     # Single jobs ignore pack

(the job expansion lives in :mod:`crelu.protocols.runner`).

Packing is an *adapter* over the suite's one training loop and one run lifecycle
(:func:`crelu.training.run.train_runs`): :class:`PackedStep` zips the members' batches step by step and gives
each member its own mean loss, so run directories, records, checkpoints (also mid-epoch), preemption, resume and
failure handling are exactly those of ordinary runs.

Each member is its ordinary run (the same config with ``pack=1``): the same run key and directory, the same init
(the member is built right after seeding with its own seed), its own fold split, normalisation and data
generator (so the same batches in the same order), and the loss ``sum_k mean CE_k`` gives each member the
gradient of its own mean loss; SGD (momentum, weight decay) acts element-wise, so the packed update is the K
separate updates.  What differs: dropout masks come from one shared RNG stream (still independent across
members, but not the masks the separate runs would draw), and floating-point summation order.  Each member
writes an ordinary ``run.json``, ``checkpoint.pt`` and ``test_logits.pt``; ``env.packed`` in the record says
which folds were trained together.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from crelu.models.packed import PackedNet, stack_inputs
from crelu.training.engine import EpochStats, autocast

log = logging.getLogger(__name__)


def check_packable(cfgs: list[DictConfig]) -> None:
    """Packed runs must differ only in ``protocol.fold`` (and the seeds derived from it)."""
    def strip(c: DictConfig) -> dict:
        d = OmegaConf.to_container(c, resolve=True)
        return {**d, "protocol": {**d["protocol"], "fold": 0, "job": 0}, "output": {**d["output"], "run_dir": 0}}

    if any(c.protocol.name != "kfold" for c in cfgs):
        raise ValueError("train_packed packs k-fold runs (protocol.name=kfold)")
    ref = strip(cfgs[0])
    for c in cfgs[1:]:
        if strip(c) != ref:
            raise ValueError("packed runs must differ only in protocol.fold (same model, data, recipe and seed)")


class PackedStep:
    """K members stacked in one :class:`PackedNet`; member ``k`` draws its batches from ``batches[k].epoch(gens[k])``.

    A step where some members have no batch (their epoch is shorter) or another batch size (``drop_last=False``)
    runs once per batch size with the other members sat out: their slices of weights, BN statistics and momentum
    are restored after the step, so every member sees exactly its own sequence of SGD steps.
    """

    def __init__(self, model, optimizer, batches: list, gens: list[torch.Generator], *, device: torch.device,
                 amp_dtype: torch.dtype | None) -> None:
        self.model, self.optimizer, self.batches, self.gens = model, optimizer, batches, gens
        self.net: PackedNet = getattr(model, "_orig_mod", model)
        self.device, self.amp_dtype = device, amp_dtype
        self.k = self.net.k

    def _totals(self, max_steps: int | None) -> list[int]:
        return [len(b) if max_steps is None else min(len(b), max_steps) for b in self.batches]

    def total(self, max_steps: int | None) -> int:
        return max(self._totals(max_steps))

    def iterate(self, max_steps: int | None, start: int = 0):
        totals = self._totals(max_steps)
        iters = [b.epoch(g, max_steps, start=start) if start else b.epoch(g, max_steps)
                 for b, g in zip(self.batches, self.gens)]
        for step in range(start + 1, max(totals) + 1):
            yield [next(it) if step <= totals[i] else None for i, it in enumerate(iters)]

    def step(self, got: list, loss_sum: torch.Tensor, wrong: torch.Tensor, n: list[int]) -> None:
        net, k, device = self.net, self.k, self.device
        by_size: dict[int, list[int]] = {}
        for i, g in enumerate(got):
            if g is not None:
                by_size.setdefault(g[0].shape[0], []).append(i)
        for bs, members in by_size.items():
            part = [g if i in members else None for i, g in enumerate(got)]
            x, y, counts = _pad_stack(part, bs)
            sat_out = [i for i in range(k) if i not in members]
            snap = _snapshot(net, self.optimizer) if sat_out else None
            with autocast(device, self.amp_dtype):
                logits = self.model(x)
            per = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none").mean(0)  # (K,)
            loss = per.sum() if not sat_out else per[members].sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            batch_loss, batch_wrong = per.detach().double() * bs, (logits.detach().argmax(2) != y).sum(0)
            if snap is not None:
                _restore_members(net, self.optimizer, snap, sat_out)
                keep = torch.tensor([c > 0 for c in counts], device=device)
                batch_loss, batch_wrong = torch.where(keep, batch_loss, 0.0), torch.where(keep, batch_wrong, 0)
            loss_sum += batch_loss
            wrong += batch_wrong
            for i in members:
                n[i] += bs

    def reduce(self, loss_sum: torch.Tensor, wrong: torch.Tensor, n: list[int]):
        return loss_sum, wrong, n  # packing is one process

    def evaluate(self, batches_per_member: list, **_) -> list[EpochStats]:
        return evaluate_packed(self.model, batches_per_member, device=self.device, amp_dtype=self.amp_dtype)


def pack_seed(seed: int, folds: list[int]) -> int:
    """Seed of a pack's shared dropout stream."""
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
        with autocast(device, amp_dtype):
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
