"""Held-out images for the analyses (invariance, reconstruction) in the network's input normalisation.

* CIFAR-10/100: the first ``n`` official test images, read with :func:`crelu.data.load_cifar` (never
  downloads; subset or re-packed copies are accepted with a warning).
* ImageNet: ``<root>/val/<class>/<image>`` (ImageFolder layout), ``n`` images evenly spread over the sorted
  file list, shorter side resized to ``dataset.resize`` and centre-cropped to
  ``dataset.image_size`` (the centre-crop evaluation, docs/recipes.md).

Normalisation: the per-channel mean/std the run trained with, as stored in its record (``run.json``
``data.mean`` / ``data.std``).  Without them (older records), CIFAR falls back to the statistics of the whole
training split, which is what a ``full``-protocol run uses (per-channel granularity INFERRED,
docs/recipes.md), and ImageNet to the usual ImageNet training-set values (INFERRED: the paper normalises per channel
but prints no numbers).

Roots are tried in order: the explicit ``root`` argument, the run config's ``dataset.root``, then the
``CRELU_DATA_ROOT`` (CIFAR) / ``CRELU_IMAGENET_ROOT`` (ImageNet) environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crelu.data import DataNotFoundError, load_cifar
from crelu.data.tensor_loader import channel_stats, normalise

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_IMAGE_EXT = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}
Stats = tuple[Sequence[float], Sequence[float]]


@dataclass
class ImageSet:
    """Normalised images (N, C, H, W) float32 plus the per-channel mean/std that undo the normalisation."""

    images: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    source: str

    def renormalised(self, stats: Stats | None) -> ImageSet:
        """The same images normalised with another run's (mean, std); ``self`` when ``stats`` is None."""
        if stats is None:
            return self
        mean, std = _stats_tensors(stats)
        raw = self.images * self.std.view(1, -1, 1, 1) + self.mean.view(1, -1, 1, 1)
        return ImageSet((raw - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1), mean, std, self.source)

    def display(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation (× std + mean per channel) and clip to [0, 1]."""
        shape = (1, -1, 1, 1) if x.dim() == 4 else (-1, 1, 1)
        x = x.detach().cpu().to(torch.float64)
        return (x * self.std.view(shape).double() + self.mean.view(shape).double()).clamp(0, 1)


def _stats_tensors(stats: Stats) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = (torch.tensor(list(v), dtype=torch.float32) for v in stats)
    return mean, std


def _candidates(name: str, root: str | os.PathLike | None, cfg_root: str | None) -> list[Path]:
    env = os.environ.get("CRELU_IMAGENET_ROOT" if name == "imagenet" else "CRELU_DATA_ROOT")
    return [Path(p) for p in (root, cfg_root, env) if p]


def _cifar(name: str, roots: list[Path], n: int, stats: Stats | None) -> ImageSet:
    errors = []
    for root in roots:
        try:
            x_test, _ = load_cifar(name, root, train=False, download=False, allow_modified=True)
        except DataNotFoundError as e:
            errors.append(str(e).split("\n")[0])
            continue
        if stats is not None:
            mean, std = _stats_tensors(stats)
            how = "the run's training statistics"
        else:
            mean, std = channel_stats(torch.from_numpy(load_cifar(name, root, train=True, download=False)[0]))
            how = "statistics of the whole training split"
        x = normalise(torch.from_numpy(x_test[:n]), mean, std)
        return ImageSet(x, mean, std, f"{root}: first {len(x)} {name} test images, normalised with {how}")
    raise FileNotFoundError(
        f"no {name} test split under any of {[str(r) for r in roots]}: {'; '.join(errors)}"
    )


def _imagenet(roots: list[Path], n: int, resize: int, crop: int, stats: Stats | None) -> ImageSet:
    from PIL import Image

    for root in roots:
        val = root / "val"
        if not val.is_dir():
            continue
        files = sorted(p for p in val.rglob("*") if p.suffix.lower() in _IMAGE_EXT)
        if not files:
            continue
        picks = [files[i] for i in np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int)]
        imgs = []
        for p in picks:
            im = Image.open(p).convert("RGB")
            scale = resize / min(im.size)
            im = im.resize(
                (max(crop, round(im.width * scale)), max(crop, round(im.height * scale))), Image.BILINEAR
            )
            left, top = (im.width - crop) // 2, (im.height - crop) // 2
            im = im.crop((left, top, left + crop, top + crop))
            imgs.append(torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()))  # HWC
        mean, std = _stats_tensors(stats or (IMAGENET_MEAN, IMAGENET_STD))
        x = normalise(torch.stack(imgs), mean, std)
        return ImageSet(x, mean, std, f"{val} ({len(imgs)} validation images)")
    raise FileNotFoundError(f"no ImageNet val/ folder with images under any of {[str(r) for r in roots]}")


def heldout_images(
    dataset_cfg, n: int, root: str | os.PathLike | None = None, stats: Stats | None = None
) -> ImageSet:
    """``n`` held-out images of the dataset a run was trained on (``dataset_cfg``: its ``cfg.dataset``).

    ``stats`` = (mean, std) per channel the run normalised with (its record's ``data.mean`` / ``data.std``).
    """
    name = dataset_cfg.name
    roots = _candidates(name, root, dataset_cfg.get("root") if hasattr(dataset_cfg, "get") else None)
    if name in ("cifar10", "cifar100"):
        return _cifar(name, roots, n, stats)
    if name == "imagenet":
        return _imagenet(roots, n, int(dataset_cfg.resize), int(dataset_cfg.image_size), stats)
    raise ValueError(f"no held-out image reader for dataset {name!r}")
