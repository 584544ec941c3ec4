#!/usr/bin/env python
"""Write a tiny ImageNet-layout ImageFolder of real JPEG files (tests, ``make table4 PROFILE=smoke``).

    python scripts/make_tiny_imagenet.py --out data/generated/imagenet \\
        [--classes 4 --train-per-class 6 --val-per-class 3 --size 80 --seed 0]

Layout (the ILSVRC convention read by :mod:`crelu.data.imagenet`)::

    OUT/train/n0XXXXXXX/n0XXXXXXX_<k>.JPEG
    OUT/val/n0XXXXXXX/ILSVRC2012_val_<k>.JPEG

Folder names look like WordNet ids.  Images are learnable (each class has its own colour and stripe
orientation, plus noise), their shorter side is ``--size`` and their aspect ratio varies (so the resize and the
central square crop are exercised), and one image per split is greyscale (ImageNet has some).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def wnids(n: int) -> list[str]:
    return [f"n0{1440764 + 7919 * k:07d}" for k in range(n)]


def _image(c: int, classes: int, size: int, rng: np.random.Generator) -> Image.Image:
    long = int(size * rng.uniform(1.0, 1.5))
    h, w = (size, long) if rng.random() < 0.5 else (long, size)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    colour = np.random.default_rng(1000 + c).uniform(40, 215, size=3).astype(np.float32)
    angle = np.pi * c / classes
    freq = 2 * np.pi / (6 + 3 * (c % 4))
    wave = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 2 * np.pi))
    img = colour[None, None, :] + 40 * wave[..., None] + rng.normal(0, 15, size=(h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def make_tiny_imagenet(out: str | Path, classes: int = 4, train_per_class: int = 6, val_per_class: int = 3,
                       size: int = 80, seed: int = 0) -> Path:
    """Write the folder tree under ``out`` and return ``out``."""
    if classes < 1 or train_per_class < 1 or val_per_class < 1 or size < 8:
        raise ValueError("need --classes, --train-per-class, --val-per-class >= 1 and --size >= 8")
    out = Path(out)
    rng = np.random.default_rng(seed)
    k = 0
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        first = True
        for c, wnid in enumerate(wnids(classes)):
            folder = out / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                k += 1
                name = f"{wnid}_{i + 1}.JPEG" if split == "train" else f"ILSVRC2012_val_{k:08d}.JPEG"
                img = _image(c, classes, size, rng)
                if first:
                    img, first = img.convert("L"), False
                img.save(folder / name, "JPEG", quality=90)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--train-per-class", type=int, default=6)
    p.add_argument("--val-per-class", type=int, default=3)
    p.add_argument("--size", type=int, default=80, help="shorter side of every image (px)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    out = make_tiny_imagenet(a.out, a.classes, a.train_per_class, a.val_per_class, a.size, a.seed)
    n = a.classes * (a.train_per_class + a.val_per_class)
    print(f"wrote {n} JPEG files ({a.classes} classes) under {out}/train and {out}/val")


if __name__ == "__main__":
    main()
