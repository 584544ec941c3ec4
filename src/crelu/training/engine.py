"""The hot loop: one training epoch and one evaluation pass.

Metrics are accumulated on the device (sum of losses, count of errors); the host reads them once per epoch,
plus once every ``log_every`` steps for the progress bar.  bf16 autocast keeps fp32 master weights.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from crelu.training import distributed as ddp


class DivergedError(FloatingPointError):
    """The training loss became NaN or Inf."""


@dataclass
class EpochStats:
    loss: float
    error: float  # percent
    examples: int
    time_s: float

    @property
    def images_per_s(self) -> float:
        return self.examples / self.time_s if self.time_s > 0 else math.nan


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class EpochProgress:
    """Where an epoch stands: steps done and the running sums (restored by a mid-epoch resume)."""

    step: int = 0
    loss_sum: float = 0.0
    wrong: int = 0
    n: int = 0
    time_s: float = 0.0


def train_epoch(model, optimizer, batches, *, gen: torch.Generator, device: torch.device,
                amp_dtype: torch.dtype | None, max_steps: int | None = None, log_every: int = 50,
                desc: str = "train", quiet: bool = False, progress: EpochProgress | None = None,
                checkpoint_every: int | None = None, on_checkpoint=None, stop_requested=None) -> EpochStats:
    """One epoch of SGD.  ``gen`` must be in its epoch-start state (it draws the epoch's order and augmentation).

    Mid-epoch resume: ``progress`` (from a checkpoint) skips the steps already done -- the same permutation is
    redrawn from the epoch-start generator state -- and continues the running sums.  ``on_checkpoint(p)`` is
    called with an :class:`EpochProgress` every ``checkpoint_every`` steps and, when ``stop_requested()``
    turns true (a preemption signal), once more before :class:`~crelu.training.preemption.Preempted` is raised
    by the callback's owner.
    """
    model.train()
    p = progress or EpochProgress()
    loss_sum = torch.full((), p.loss_sum, device=device, dtype=torch.float64)
    wrong = torch.full((), p.wrong, device=device, dtype=torch.int64)
    n = p.n
    total = len(batches) if max_steps is None else min(len(batches), max_steps)
    bar = tqdm(total=total, initial=p.step, desc=desc, leave=False, disable=quiet, unit="step", dynamic_ncols=True)
    t0 = time.perf_counter() - p.time_s
    it = batches.epoch(gen, max_steps, start=p.step) if p.step else batches.epoch(gen, max_steps)

    def snapshot(step: int) -> EpochProgress:
        return EpochProgress(step, loss_sum.item(), int(wrong.item()), n, time.perf_counter() - t0)

    for step, (x, y) in enumerate(it, p.step + 1):
        with _autocast(device, amp_dtype):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bs = y.shape[0]
        loss_sum += loss.detach().double() * bs
        wrong += (logits.detach().argmax(1) != y).sum()
        n += bs
        bar.update(1)
        if not quiet and (step % log_every == 0 or step == total):
            running = (loss_sum / n).item()  # one sync per log_every steps, for the bar only
            bar.set_postfix(loss=f"{running:.4f}", img_s=f"{n / (time.perf_counter() - t0):.0f}")
        if on_checkpoint is not None and step < total and (
                (stop_requested is not None and stop_requested())
                or (checkpoint_every and step % checkpoint_every == 0)):
            on_checkpoint(snapshot(step))
    bar.close()
    loss_sum, wrong, n = ddp.reduce_sums(loss_sum, wrong, n)  # DDP: sums over ranks (no-op in one process)
    mean_loss = (loss_sum / max(n, 1)).item()
    if not math.isfinite(mean_loss):
        raise DivergedError(f"training loss is {mean_loss} (NaN/Inf)")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return EpochStats(mean_loss, 100.0 * wrong.item() / max(n, 1), n, time.perf_counter() - t0)


@torch.no_grad()
def evaluate(model, batches: Iterable, *, device: torch.device, amp_dtype: torch.dtype | None,
             keep_logits: bool = False) -> tuple[EpochStats, torch.Tensor | None, torch.Tensor | None]:
    """Eval-mode mean cross-entropy and error; optionally the float32 logits and labels (on CPU)."""
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    wrong = torch.zeros((), device=device, dtype=torch.int64)
    n = 0
    outs, labels = [], []
    t0 = time.perf_counter()
    for x, y in batches.epoch(None):
        with _autocast(device, amp_dtype):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        wrong += (logits.argmax(1) != y).sum()
        n += y.shape[0]
        if keep_logits:
            outs.append(logits.cpu())
            labels.append(y.cpu())
    loss_sum, wrong, n = ddp.reduce_sums(loss_sum, wrong, n)  # DDP: sums over ranks (no-op in one process)
    stats = EpochStats((loss_sum / max(n, 1)).item(), 100.0 * wrong.item() / max(n, 1), n,
                       time.perf_counter() - t0)
    if keep_logits:  # DDP: every rank's block, in rank order
        return stats, ddp.all_gather_cat(torch.cat(outs)), ddp.all_gather_cat(torch.cat(labels))
    return stats, None, None
