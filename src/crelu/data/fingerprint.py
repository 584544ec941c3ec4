"""What data a run trained on: a fingerprint per split, part of every run's identity.

``data_fingerprint(dataset_cfg)`` returns::

    {"train": {"images": 50000, "class_counts": [5000, ...], "sha256": "…", "official": true},
     "test":  {...},
     "digest": "1a2b3c4d"}      # 8 hex of the two splits' hashes: enters the run key (crelu.results.runkey)

* CIFAR: ``sha256`` hashes the loaded images and labels (uint8 pixels + int64 labels, in file order), so two
  copies with the same content agree whatever their file layout; ``official`` says whether every file of the
  split has the MD5 of the official release (torchvision's list).  ``dataset.train_subset`` is a config knob and
  is keyed separately; the fingerprint describes the files the subset is drawn from.
* ImageNet: hashing ~150 GB per launch is not an option: ``sha256`` covers the sorted list of (relative path,
  size) of the split's image files, ``official`` is ``None`` (unknown).

Loads and checksums are computed once per process (keyed by the files' paths, sizes and modification times):
a sweep of many jobs in one process, or the fingerprint and the data loader of one run, never read twice.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from crelu.data.cifar import CIFAR_CLASSES, load_cifar

_MD5: dict[tuple[str, int, int], str] = {}
_ARRAYS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_FINGERPRINTS: dict[tuple, dict[str, Any]] = {}


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns)


def file_md5(path: str | os.PathLike) -> str:
    """MD5 of a file, computed once per process for a given (path, size, mtime)."""
    key = _stat_key(Path(path))
    if key not in _MD5:
        h = hashlib.md5()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _MD5[key] = h.hexdigest()
    return _MD5[key]


def _cifar_files(name: str, root: Path, train: bool) -> list[tuple[Path, str]]:
    cls = CIFAR_CLASSES[name]
    return [(root / cls.base_folder / f, md5) for f, md5 in (cls.train_list if train else cls.test_list)]


def _files_key(files: list[Path]) -> tuple:
    return tuple(_stat_key(p) if p.exists() else (str(p), -1, -1) for p in files)


def load_cifar_cached(name: str, root: str | os.PathLike, *, train: bool, download: bool = True,
                      allow_modified: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`crelu.data.cifar.load_cifar`, read once per process (read-only arrays; copy before writing)."""
    root = Path(root).expanduser().resolve()
    files = [p for p, _ in _cifar_files(name, root, train)]
    key = (name, train, allow_modified, _files_key(files))
    if key in _ARRAYS:
        return _ARRAYS[key]
    x, y = load_cifar(name, root, train=train, download=download, allow_modified=allow_modified)
    x.setflags(write=False)
    y.setflags(write=False)
    while len(_ARRAYS) >= 4:  # two datasets' splits at most
        _ARRAYS.pop(next(iter(_ARRAYS)))
    _ARRAYS[(name, train, allow_modified, _files_key(files))] = (x, y)  # the files may have just been downloaded
    return x, y


def _split_print(x: np.ndarray, y: np.ndarray, num_classes: int, official: bool | None) -> dict[str, Any]:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return {"images": int(len(y)), "class_counts": np.bincount(y, minlength=num_classes).tolist(),
            "sha256": h.hexdigest(), "official": official}


def _cifar_print(d) -> dict[str, Any]:
    root = Path(d.root).expanduser().resolve()
    out: dict[str, Any] = {}
    for split, train in (("train", True), ("test", False)):
        x, y = load_cifar_cached(d.name, root, train=train, download=d.download, allow_modified=d.allow_modified)
        official = all(p.exists() and file_md5(p) == md5 for p, md5 in _cifar_files(d.name, root, train))
        out[split] = _split_print(x, y, d.num_classes, official)
    return out


def _imagenet_print(d) -> dict[str, Any]:
    from crelu.data.imagenet import scan_split

    root = Path(d.root).expanduser()
    out: dict[str, Any] = {}
    for split in ("train", "val"):
        ix = scan_split(root, split)
        h = hashlib.sha256()
        for p in ix.paths:
            rel = p.decode() if isinstance(p, bytes) else str(p)
            full = root / split / rel
            h.update(f"{rel}\0{full.stat().st_size if full.exists() else -1}\n".encode())
        labels = np.asarray(ix.labels, dtype=np.int64)
        out["test" if split == "val" else "train"] = {
            "images": int(len(labels)), "class_counts": np.bincount(labels, minlength=d.num_classes).tolist(),
            "sha256": h.hexdigest(), "official": None}
    return out


def data_fingerprint(dataset_cfg) -> dict[str, Any]:
    """The fingerprint of ``dataset_cfg``'s training and test splits (see the module docstring)."""
    d = dataset_cfg
    root = Path(d.root).expanduser().resolve()
    if d.name in CIFAR_CLASSES:
        files = [p for train in (True, False) for p, _ in _cifar_files(d.name, root, train)]
        key: tuple = (d.name, d.num_classes, d.allow_modified, _files_key(files))
        make = _cifar_print
    elif d.name == "imagenet":
        key = (d.name, d.num_classes, str(root), *(_stat_key(root / s) for s in ("train", "val")
                                                  if (root / s).exists()))
        make = _imagenet_print
    else:
        raise ValueError(f"unknown dataset {d.name!r}; use cifar10, cifar100 or imagenet")
    if key not in _FINGERPRINTS:
        fp = make(d)
        fp["digest"] = hashlib.sha256(f"{fp['train']['sha256']}:{fp['test']['sha256']}".encode()).hexdigest()[:8]
        _FINGERPRINTS[key] = fp
    return _FINGERPRINTS[key]
