"""Generated CIFAR-format datasets for tests and smoke runs on machines without the real data.

:func:`write_fake_cifar` writes files in the official "python version" layout (pickled dicts with ``data``
uint8 [N, 3072] and ``labels``/``fine_labels``), so loading them exercises torchvision's real dataset classes.
Images are learnable: each class has its own colour and stripe orientation, plus noise.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from crelu.data.cifar import CIFAR_CLASSES


def _images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    n = len(labels)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    palette = rng.uniform(40, 215, size=(num_classes, 3)).astype(np.float32)
    angle = np.linspace(0, np.pi, num_classes, endpoint=False)
    freq = 2 * np.pi / (4 + (np.arange(num_classes) % 5))
    out = np.empty((n, 3, 32, 32), np.float32)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        phase = rng.uniform(0, 2 * np.pi, size=(len(idx), 1, 1))
        wave = np.sin(freq[c] * (np.cos(angle[c]) * xx + np.sin(angle[c]) * yy) + phase)  # [n_c, 32, 32]
        out[idx] = palette[c][None, :, None, None] + 35 * wave[:, None]
    out += rng.normal(0, 20, size=out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8).reshape(n, 3072)


def write_fake_cifar(root: str | os.PathLike, name: str = "cifar10", n_train: int = 500, n_test: int = 100,
                     seed: int = 0) -> Path:
    """Write a generated CIFAR-10/100 copy under ``root`` in the official layout; returns ``root``."""
    cls = CIFAR_CLASSES[name]
    num_classes = 10 if name == "cifar10" else 100
    rng = np.random.default_rng(seed)
    folder = Path(root) / cls.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    train_files = [f for f, _ in cls.train_list]
    per_file = np.array_split(np.arange(n_train), len(train_files))
    for fname, idx in [*zip(train_files, per_file), (cls.test_list[0][0], np.arange(n_test))]:
        labels = rng.integers(0, num_classes, size=len(idx))
        entry = {"batch_label": f"generated {fname}", label_key: labels.tolist(),
                 "data": _images(labels, num_classes, rng), "filenames": [f"{fname}_{i}.png" for i in idx]}
        if name == "cifar100":
            entry["coarse_labels"] = (labels // 5).tolist()
        with open(folder / fname, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {cls.meta["key"]: [f"class_{i}" for i in range(num_classes)]}
    with open(folder / cls.meta["filename"], "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return Path(root)
