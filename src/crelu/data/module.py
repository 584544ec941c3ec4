"""Build the data of one run from its config: which examples train, which validate, which test.

The protocol decides the split of the official training set (docs/recipes.md):

* ``full``   : train on the whole training set (``dataset.train_subset`` images for smoke runs);
* ``kfold``  : train on all folds but ``protocol.fold``, validate on that fold (stratified, ``split_seed``);
* ``single`` : phase 1 trains on the training set minus a stratified ``protocol.holdout`` and validates on it;
  phase 2 trains on everything and monitors the same hold-out (now part of its training set).

Normalisation statistics (per channel, INFERRED granularity, docs/recipes.md) come from the images the run
trains on.  Only CIFAR lives here; ImageNet has its own loader module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from crelu.data.fingerprint import load_cifar_cached
from crelu.data.tensor_loader import TensorBatches, channel_stats, normalise

log = logging.getLogger(__name__)


@dataclass
class CropEval:
    """The full-size validation images and settings of ImageNet's centre-crop / 10-patch evaluation."""

    batches: Any  # yields (uint8-or-float squares, labels) through .epoch(None)
    image_size: int
    eval_mode: str
    channels_last: bool = False


@dataclass
class DataBundle:
    """Everything the training loop needs: the training batches and named evaluation sets.

    ``train`` and every value of ``evals`` follow one small interface (see :class:`TensorBatches`):
    ``epoch(gen, max_steps=None)`` yields ``(x, y)`` batches on the device, ``len()`` is the number of batches
    of an epoch and ``num_examples`` the number of images.  Another dataset (ImageNet) provides the same
    interface.  ``crop_eval`` (ImageNet) holds what the final centre-crop / 10-patch evaluation needs: the
    training loop runs it through :mod:`crelu.evaluation` at the end of a run.
    """

    train: TensorBatches
    evals: dict[str, TensorBatches] = field(default_factory=dict)  # "val" (optional), "test", "train_eval"
    num_classes: int = 10
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    crop_eval: CropEval | None = None
    sharded: bool = False

    def shard(self, rank: int, world: int) -> DataBundle:
        """This rank's share of every split (a no-op for a bundle its builder already sharded, or one process)."""
        if world == 1 or self.sharded:
            return self
        self.train = self.train.shard(rank, world)
        self.evals = {k: v.shard(rank, world) for k, v in self.evals.items()}
        self.sharded = True
        return self

    def sizes(self) -> dict[str, int]:
        return {"train_size": self.train.num_examples,
                **{f"{k}_size": v.num_examples for k, v in self.evals.items()}}


def split_indices(labels: np.ndarray, protocol, phase: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(train_idx, val_idx)`` into ``labels`` for the run's protocol (and, for Single, its ``phase``).

    Single's ``phase1`` (also the tuning split of ``make tune``) trains without the hold-out and validates on it;
    ``phase2`` trains on everything and monitors the hold-out.
    """
    from crelu.data.splits import holdout_split, kfold_indices

    n = len(labels)
    if protocol.name == "full":
        return np.arange(n), None
    if protocol.name == "kfold":
        if protocol.fold is None or not 0 <= protocol.fold < protocol.folds:
            raise ValueError(f"protocol.fold must be in 0..{protocol.folds - 1} for kfold, got {protocol.fold}")
        return kfold_indices(labels, protocol.folds, protocol.fold, protocol.split_seed)
    if protocol.name in ("single", "tune"):  # tune: phase 1's split (make tune)
        if not 0 < protocol.holdout < n:
            raise ValueError(f"protocol.holdout={protocol.holdout} must be between 1 and the {n} training images")
        train_idx, hold_idx = holdout_split(labels, protocol.holdout, protocol.split_seed)
        if phase == "phase2":
            return np.arange(n), hold_idx
        return train_idx, hold_idx
    raise ValueError(f"unknown protocol {protocol.name!r}; use full, kfold, single or tune")


def build_cifar(cfg, device: torch.device, channels_last: bool = False, phase: str | None = None) -> DataBundle:
    d = cfg.dataset
    kw = dict(download=d.download, allow_modified=d.allow_modified)
    x_train, y_train = load_cifar_cached(d.name, d.root, train=True, **kw)  # read-only, shared by the process
    x_test, y_test = load_cifar_cached(d.name, d.root, train=False, **kw)
    n_classes = int(max(y_train.max(), y_test.max()) + 1)
    if n_classes > d.num_classes:
        raise ValueError(f"{d.name} has {n_classes} classes but dataset.num_classes={d.num_classes}")
    if d.train_subset is not None and d.train_subset < len(y_train):
        from crelu.data.splits import stratified_subset

        keep = stratified_subset(y_train, d.train_subset, cfg.protocol.split_seed)
        x_train, y_train = x_train[keep], y_train[keep]
    if d.test_subset is not None:
        x_test, y_test = x_test[: d.test_subset], y_test[: d.test_subset]

    train_idx, val_idx = split_indices(y_train, cfg.protocol, phase)
    xt = torch.from_numpy(x_train if x_train.flags.writeable else x_train.copy())
    mean, std = channel_stats(xt[torch.from_numpy(train_idx)])

    def to_dev(images: np.ndarray | torch.Tensor, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = images if torch.is_tensor(images) else torch.from_numpy(np.array(images))
        x = x.to(device)
        return normalise(x, mean.to(device), std.to(device)), torch.from_numpy(np.array(labels)).to(device)

    xs, ys = to_dev(xt, y_train)  # the whole (subset of the) training set, normalised once
    ti = torch.as_tensor(train_idx, device=device)
    common = dict(batch_size=cfg.train.batch_size, channels_last=channels_last)
    train = TensorBatches(xs.index_select(0, ti), ys.index_select(0, ti), shuffle=True,
                          drop_last=cfg.train.drop_last, flip=d.flip, shift=d.shift, **common)
    ev = dict(batch_size=cfg.train.eval_batch_size, shuffle=False, drop_last=False, channels_last=channels_last)
    evals = {}
    if val_idx is not None:
        vi = torch.as_tensor(val_idx, device=device)
        evals["val"] = TensorBatches(xs.index_select(0, vi), ys.index_select(0, vi), **ev)
    evals["test"] = TensorBatches(*to_dev(x_test, y_test), **ev)
    evals["train_eval"] = TensorBatches(train.x, train.y, **ev)  # eval mode, no augmentation (shares memory)
    del xs, ys
    return DataBundle(train, evals, d.num_classes, mean.tolist(), std.tolist())


def build_data(cfg, device: torch.device, channels_last: bool = False, *, phase: str | None = None,
               rank: int = 0, world: int = 1) -> DataBundle:
    """Dispatch on ``dataset.name``; ``phase`` picks Single's split, ``rank``/``world`` this process's shard."""
    if cfg.dataset.name in ("cifar10", "cifar100"):
        return build_cifar(cfg, device, channels_last, phase).shard(rank, world)
    if cfg.dataset.name == "imagenet":
        from crelu.data.imagenet import build_imagenet

        return build_imagenet(cfg, device, channels_last, rank, world)
    raise ValueError(f"unknown dataset {cfg.dataset.name!r}; use cifar10, cifar100 or imagenet")
