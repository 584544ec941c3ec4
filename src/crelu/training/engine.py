"""The hot loop: THE training epoch (one network or K packed ones) and the evaluation pass.

:func:`train_epoch` is the only epoch loop of the suite.  What one optimisation step does is an adapter:

* :class:`ModelStep` -- one network on the batches of one run (every ordinary run, DDP included);
* :class:`crelu.training.packed.PackedStep` -- K fold networks stacked into one :class:`PackedNet`, the members'
  batches zipped step by step, one loss per member.

Both accumulate per-member loss sums and error counts on the device; the host reads them once every
``log_every`` steps for the progress bar, once every ``nan_check_every`` steps to stop a diverged run early, and
once at the end of the epoch.  bf16 autocast keeps fp32 master weights.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from crelu.training import distributed as ddp
from crelu.training.progress import progress_bar


class DivergedError(FloatingPointError):
    """The training loss became NaN or Inf."""


@dataclass
class EpochStats:
    loss: float
    error: float  # percent
    examples: int
    time_s: float
    steps: int = 0

    @property
    def images_per_s(self) -> float:
        return self.examples / self.time_s if self.time_s > 0 else math.nan


def autocast(device: torch.device, dtype: torch.dtype | None):
    """bf16 (or another dtype) autocast on ``device``; a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class EpochProgress:
    """Where an epoch stands: steps done and each member's running sums (restored by a mid-epoch resume)."""

    step: int = 0
    loss_sum: list[float] = field(default_factory=lambda: [0.0])
    wrong: list[int] = field(default_factory=lambda: [0])
    n: list[int] = field(default_factory=lambda: [0])
    time_s: float = 0.0

    @classmethod
    def zeros(cls, k: int) -> EpochProgress:
        return cls(0, [0.0] * k, [0] * k, [0] * k, 0.0)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochProgress:
        """From a checkpoint (checkpoints of one network written before packing existed hold scalars)."""
        as_list = lambda v: list(v) if isinstance(v, (list, tuple)) else [v]  # noqa: E731
        return cls(int(d["step"]), as_list(d["loss_sum"]), [int(w) for w in as_list(d["wrong"])],
                   [int(m) for m in as_list(d["n"])], float(d.get("time_s", 0.0)))

    @classmethod
    def stack(cls, parts: list[EpochProgress]) -> EpochProgress:
        """One progress for K members from each member's own (they must be at the same step)."""
        if len({p.step for p in parts}) != 1:
            raise ValueError(f"members are at different steps: {[p.step for p in parts]}")
        return cls(parts[0].step, [x for p in parts for x in p.loss_sum], [x for p in parts for x in p.wrong],
                   [x for p in parts for x in p.n], max(p.time_s for p in parts))

    def member(self, i: int) -> EpochProgress:
        return EpochProgress(self.step, [self.loss_sum[i]], [self.wrong[i]], [self.n[i]], self.time_s)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ModelStep:
    """One network: ``batches.epoch(gen)`` feeds it, one mean cross-entropy per step."""

    def __init__(self, model, optimizer, batches, gen: torch.Generator | None, *, device: torch.device,
                 amp_dtype: torch.dtype | None, eval_model=None) -> None:
        self.model, self.optimizer, self.batches, self.gen = model, optimizer, batches, gen
        self.eval_model = eval_model if eval_model is not None else model
        self.device, self.amp_dtype = device, amp_dtype
        self.k = 1

    def total(self, max_steps: int | None) -> int:
        return len(self.batches) if max_steps is None else min(len(self.batches), max_steps)

    def iterate(self, max_steps: int | None, start: int = 0) -> Iterator[Any]:
        return self.batches.epoch(self.gen, max_steps, start=start) if start else self.batches.epoch(self.gen,
                                                                                                      max_steps)

    def step(self, batch, loss_sum: torch.Tensor, wrong: torch.Tensor, n: list[int]) -> None:
        x, y = batch
        with autocast(self.device, self.amp_dtype):
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        bs = y.shape[0]
        loss_sum += loss.detach().double() * bs
        wrong += (logits.detach().argmax(1) != y).sum()
        n[0] += bs

    def reduce(self, loss_sum: torch.Tensor, wrong: torch.Tensor, n: list[int]):
        """DDP: sums over ranks (a no-op in one process)."""
        ls, w, m = ddp.reduce_sums(loss_sum[0], wrong[0], n[0])
        return ls.reshape(1), w.reshape(1), [m]

    def evaluate(self, batches_per_member: list, **kw) -> list[EpochStats]:
        return [evaluate(self.eval_model, batches_per_member[0], device=self.device, amp_dtype=self.amp_dtype,
                         **kw)[0]]


def train_epoch(stepper, *, max_steps: int | None = None, log_every: int = 50, desc: str = "train",
                quiet: bool = False, progress: EpochProgress | None = None, checkpoint_every: int | None = None,
                on_checkpoint: Callable[[EpochProgress], None] | None = None,
                stop_requested: Callable[[], bool] | None = None, nan_check_every: int | None = None,
                eta: Callable[[float], str] | None = None) -> list[EpochStats]:
    """One epoch of SGD for the ``stepper``'s member(s); one :class:`EpochStats` per member.

    The stepper's data generator(s) must be in their epoch-start state (they draw the epoch's order and
    augmentation).  Mid-epoch resume: ``progress`` (from a checkpoint) skips the steps already done -- the same
    permutation is redrawn from the epoch-start state -- and continues the running sums.  ``on_checkpoint(p)`` is
    called every ``checkpoint_every`` steps and, when ``stop_requested()`` turns true (a preemption signal),
    once more; its owner raises :class:`~crelu.training.preemption.Preempted`.

    Every ``nan_check_every`` steps (and at the end) the running sums are checked: when every member's loss is
    NaN/Inf, :class:`DivergedError` is raised at once.  A packed member that diverges alone is reported in its
    EpochStats (a non-finite loss) and the others go on.
    """
    stepper.model.train()
    k, device = stepper.k, stepper.device
    p = progress or EpochProgress.zeros(k)
    if len(p.n) != k:
        raise ValueError(f"progress has {len(p.n)} members, the stepper {k}")
    loss_sum = torch.tensor(p.loss_sum, device=device, dtype=torch.float64)
    wrong = torch.tensor(p.wrong, device=device, dtype=torch.int64)
    n = list(p.n)
    total = stepper.total(max_steps)
    bar = progress_bar(total, initial=p.step, desc=desc, disable=quiet)
    t0 = time.perf_counter() - p.time_s

    def snapshot(step: int) -> EpochProgress:
        return EpochProgress(step, loss_sum.tolist(), [int(w) for w in wrong.tolist()], list(n),
                             time.perf_counter() - t0)

    def check_finite(step: int) -> None:
        if not bool(torch.isfinite(loss_sum).any()):
            raise DivergedError(f"training loss is {loss_sum.tolist()[0] if k == 1 else 'NaN/Inf in every member'} "
                                f"(NaN/Inf) at step {step}")

    step = p.step
    for step, batch in enumerate(stepper.iterate(max_steps, start=p.step), p.step + 1):
        stepper.step(batch, loss_sum, wrong, n)
        bar.update(1)
        if not quiet and (step % log_every == 0 or step == total):
            running = (loss_sum.sum() / max(sum(n), 1)).item()  # one sync per log_every steps, for the bar only
            post = {"loss": f"{running:.4f}", "img_s": f"{sum(n) / (time.perf_counter() - t0):.0f}"}
            if eta is not None:
                post["run_eta"] = eta((step - p.step) / max(total - p.step, 1))
            bar.set_postfix(post)
        if nan_check_every and step % nan_check_every == 0:
            check_finite(step)
        if on_checkpoint is not None and step < total and (
                (stop_requested is not None and stop_requested())
                or (checkpoint_every and step % checkpoint_every == 0)):
            on_checkpoint(snapshot(step))
    bar.close()
    steps = step
    loss_sum, wrong, n = stepper.reduce(loss_sum, wrong, n)
    check_finite(steps)
    losses = (loss_sum / torch.tensor([max(m, 1) for m in n], device=device)).tolist()
    errs = wrong.tolist()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    return [EpochStats(losses[i], 100.0 * errs[i] / max(n[i], 1), n[i], dt, steps) for i in range(k)]


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
        with autocast(device, amp_dtype):
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
