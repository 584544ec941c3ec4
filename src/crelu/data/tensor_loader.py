"""Device-resident CIFAR batches: the whole split lives on the training device as normalised float tensors.

No DataLoader workers, no per-sample Python: each epoch draws a permutation, flip flags and shift offsets from
one seeded CPU ``torch.Generator`` (so the data order is identical on CPU and GPU and is resumable from the
generator state), moves them to the device once, and every batch is an index + ``torch.where`` flip + one
gather for the random shift.  Nothing in :meth:`TensorBatches.epoch` synchronises with the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


def normalise(images_u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW, ``(x/255 - mean) / std`` per channel."""
    x = images_u8.permute(0, 3, 1, 2).float().div_(255.0)
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


def channel_stats(images_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (of x/255) of a uint8 NHWC tensor, in float64 for stability."""
    x = images_u8.reshape(-1, images_u8.shape[-1]).double().div(255.0)
    return x.mean(0).float(), x.std(0).float()


def random_shift(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift each image by (dx, dy) in [-pad, pad] px with zero fill (a batched pad + random crop)."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (dy + pad).view(n, 1) + torch.arange(h, device=x.device).view(1, h)  # [n, h]
    cols = (dx + pad).view(n, 1) + torch.arange(w, device=x.device).view(1, w)  # [n, w]
    idx = (rows.view(n, 1, h, 1) * (w + 2 * pad) + cols.view(n, 1, 1, w)).expand(n, c, h, w)
    return padded.flatten(2).gather(2, idx.reshape(n, c, h * w)).view(n, c, h, w)


@dataclass
class TensorBatches:
    """Batches of a device-resident split; ``epoch(gen)`` yields ``(x, y)`` with augmentation applied."""

    x: torch.Tensor  # float [N, C, H, W] on the device, normalised
    y: torch.Tensor  # int64 [N] on the device
    batch_size: int
    shuffle: bool = True
    drop_last: bool = True
    flip: bool = False
    shift: int = 0
    channels_last: bool = False

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_examples(self) -> int:
        return int(self.x.shape[0])

    def epoch(self, gen: torch.Generator | None = None, max_steps: int | None = None, start: int = 0
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of one epoch; ``start`` skips that many batches (the random draws are made all the same)."""
        n, dev = self.x.shape[0], self.x.device
        if self.shuffle:
            order = torch.randperm(n, generator=gen).to(dev, non_blocking=True)
        else:
            order = torch.arange(n, device=dev)
        flips = shifts = None
        if self.flip:
            flips = (torch.rand(n, generator=gen) < 0.5).to(dev, non_blocking=True)
        if self.shift > 0:
            shifts = torch.randint(-self.shift, self.shift + 1, (2, n), generator=gen).to(dev, non_blocking=True)
        steps = len(self) if max_steps is None else min(len(self), max_steps)
        for s in range(start, steps):
            sl = slice(s * self.batch_size, min((s + 1) * self.batch_size, n))
            idx = order[sl]
            xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
            if flips is not None:
                xb = torch.where(flips[sl].view(-1, 1, 1, 1), xb.flip(3), xb)
            if shifts is not None:
                xb = random_shift(xb, shifts[0, sl], shifts[1, sl], self.shift)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb

    def shard(self, rank: int, world: int):
        """Rank ``rank``'s view: its rows of every global batch (training, ``shuffle``) or a contiguous block of
        the examples (evaluation) -- :mod:`crelu.data.sharding`."""
        from crelu.data.sharding import EvalShard, RankShard

        return RankShard(self, rank, world) if self.shuffle else EvalShard(self, rank, world)
