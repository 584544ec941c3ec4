"""Held-out images for the analyses (invariance, reconstruction), read straight from the dataset files.

The analyses only need a fixed set of held-out images in the network's input normalisation, so this module
reads them itself (no augmentation, no loaders):

* CIFAR-10/100: the official "python version" files (``cifar-10-batches-py/test_batch``,
  ``cifar-100-python/test``), the first ``n`` test images; per-channel mean/std over the training files
  present (PAPER_SPEC §3.1: mean/std per channel with training-set statistics, INFERRED granularity).  Subset
  copies (e.g. ``shared/data``) work the same way.
* ImageNet: ``<root>/val/<class>/<image>`` (ImageFolder layout), ``n`` images evenly spread over the sorted
  file list, shorter side resized to ``dataset.resize`` and centre-cropped to ``dataset.image_size`` (§4.4);
  the per-channel mean/std are the usual ImageNet training-set values (INFERRED: the paper normalises per
  channel but prints no numbers).

Roots are tried in order: the explicit ``root`` argument, the run config's ``dataset.root``, then the
``CRELU_DATA_ROOT`` (CIFAR) / ``CRELU_IMAGENET_ROOT`` (ImageNet) environment variables.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CIFAR = {
    "cifar10": ("cifar-10-batches-py", ["test_batch"], [f"data_batch_{i}" for i in range(1, 6)]),
    "cifar100": ("cifar-100-python", ["test"], ["train"]),
}
_IMAGE_EXT = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}


@dataclass
class ImageSet:
    """Normalised images (N, C, H, W) float32 plus the per-channel mean/std that undo the normalisation."""

    images: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    source: str

    def display(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation (× std + mean per channel) and clip to [0, 1]."""
        shape = (1, -1, 1, 1) if x.dim() == 4 else (-1, 1, 1)
        x = x.detach().cpu().to(torch.float64)
        return (x * self.std.view(shape).double() + self.mean.view(shape).double()).clamp(0, 1)


def _candidates(name: str, root: str | os.PathLike | None, cfg_root: str | None) -> list[Path]:
    env = os.environ.get("CRELU_IMAGENET_ROOT" if name == "imagenet" else "CRELU_DATA_ROOT")
    return [Path(p) for p in (root, cfg_root, env) if p]


def _read_cifar_rows(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    return np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)


def _cifar(name: str, roots: list[Path], n: int) -> ImageSet:
    folder, test_files, train_files = _CIFAR[name]
    for root in roots:
        base = root / folder
        if not all((base / t).exists() for t in test_files):
            continue
        test = np.concatenate([_read_cifar_rows(base / t) for t in test_files])[:n]
        train = [base / t for t in train_files if (base / t).exists()]
        stats_src = np.concatenate([_read_cifar_rows(p) for p in train]) if train else test
        stats = torch.from_numpy(stats_src).to(torch.float64) / 255.0
        mean, std = stats.mean(dim=(0, 2, 3)), stats.std(dim=(0, 2, 3))
        x = torch.from_numpy(test).to(torch.float64) / 255.0
        x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        return ImageSet(x.float(), mean.float(), std.float(), f"{base} (first {len(test)} test images)")
    raise FileNotFoundError(
        f"no {name} test files ({folder}/{test_files[0]}) under any of {[str(r) for r in roots]}"
    )


def _imagenet(roots: list[Path], n: int, resize: int, crop: int) -> ImageSet:
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
            imgs.append(torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1))
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        x = (torch.stack(imgs).float() / 255.0 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        return ImageSet(x, mean, std, f"{val} ({len(imgs)} validation images)")
    raise FileNotFoundError(f"no ImageNet val/ folder with images under any of {[str(r) for r in roots]}")


def heldout_images(dataset_cfg, n: int, root: str | os.PathLike | None = None) -> ImageSet:
    """``n`` held-out images of the dataset a run was trained on (``dataset_cfg``: its ``cfg.dataset``)."""
    name = dataset_cfg.name
    roots = _candidates(name, root, dataset_cfg.get("root") if hasattr(dataset_cfg, "get") else None)
    if name in _CIFAR:
        return _cifar(name, roots, n)
    if name == "imagenet":
        return _imagenet(roots, n, int(dataset_cfg.resize), int(dataset_cfg.image_size))
    raise ValueError(f"no held-out image reader for dataset {name!r}")
