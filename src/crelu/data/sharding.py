"""Data-parallel shards of the suite's batch iterators (used by :mod:`crelu.training.distributed`).

Rank ``r`` of ``world`` processes sees ``TensorBatches.shard(r, world)``: rows ``[r*b, (r+1)*b)`` of every
*global* training batch of ``B = world*b`` images (the epoch plan is drawn exactly as in one process), and a
contiguous block of every evaluation set.  The data package knows nothing about process groups: the rank and
world size are arguments.
"""

from __future__ import annotations

import torch


def block(n: int, r: int, world: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``r``'s contiguous share of ``n`` items (sizes differ by at most one)."""
    return r * n // world, (r + 1) * n // world


def check_global_batch(batch_size: int, drop_last: bool, world: int) -> int:
    """Per-rank batch of a global ``batch_size``; raises a clear ValueError when it cannot be split evenly."""
    if world > 1 and (batch_size % world or not drop_last):
        raise ValueError(f"DDP with {world} processes needs train.batch_size (the global batch, {batch_size}) "
                         f"divisible by {world} and train.drop_last=true (got drop_last={drop_last})")
    return batch_size // world


class RankShard:
    """Rank r's share of each global batch of a :class:`~crelu.data.tensor_loader.TensorBatches`.

    The full epoch plan (permutation, flips, shifts) is drawn from the shared generator exactly as in one
    process, and rank r keeps rows ``[r*b, (r+1)*b)`` of every global batch of ``B = world*b`` images.  The
    batch gather runs for the whole global batch (device-resident CIFAR, microseconds) so the augmentation of
    every image is, by construction, the single-process one.
    """

    def __init__(self, inner, r: int, world: int) -> None:
        self.inner, self.rank, self.world = inner, r, world
        self.local = check_global_batch(inner.batch_size, inner.drop_last, world)

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def num_examples(self) -> int:
        return self.inner.num_examples

    def epoch(self, gen: torch.Generator | None = None, max_steps: int | None = None, start: int = 0):
        lo, hi = self.rank * self.local, (self.rank + 1) * self.local
        for x, y in self.inner.epoch(gen, max_steps, start=start):
            yield x[lo:hi], y[lo:hi]


class EvalShard:
    """A contiguous block of an evaluation set (``num_examples`` stays the global count)."""

    def __init__(self, inner, r: int, world: int) -> None:
        from crelu.data.tensor_loader import TensorBatches

        lo, hi = block(inner.num_examples, r, world)
        self.total = inner.num_examples
        self.part = TensorBatches(inner.x[lo:hi], inner.y[lo:hi], inner.batch_size, shuffle=False, drop_last=False,
                                  channels_last=inner.channels_last)

    def __len__(self) -> int:
        return len(self.part)

    @property
    def num_examples(self) -> int:
        return self.total

    def epoch(self, gen: torch.Generator | None = None, max_steps: int | None = None, start: int = 0):
        return self.part.epoch(gen, max_steps, start=start)


