"""CIFAR-10/100 through torchvision's dataset classes, tolerant of modified copies, with actionable errors.

torchvision's ``CIFAR10``/``CIFAR100`` verify the official MD5 of every batch file and refuse anything else.
Users with their own (re-packed, subset, or generated) copies in the official "python version" layout need to
load them anyway: :class:`LenientCIFAR10` / :class:`LenientCIFAR100` accept files whose checksums differ,
with a warning naming the files, when ``allow_modified`` is true.  Everything else (download, file format,
label keys) is torchvision's own code path.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity


class DataNotFoundError(FileNotFoundError):
    """The dataset is not where the config says, and could not be downloaded.  The message says how to fix it."""


class ModifiedDatasetWarning(UserWarning):
    """Dataset files are present but their checksums differ from the official release."""


_WARNED: set[str] = set()  # folders already warned about in this process (sweeps load the same data often)


class _LenientMixin:
    allow_modified: bool = True

    def _missing_files(self) -> list[str]:
        names = [f for f, _ in self.train_list + self.test_list] + [self.meta["filename"]]
        return [n for n in names if not os.path.isfile(os.path.join(self.root, self.base_folder, n))]

    def _modified_files(self) -> list[str]:
        pairs = [*self.train_list, *self.test_list, [self.meta["filename"], self.meta["md5"]]]
        return [f for f, md5 in pairs if not check_integrity(os.path.join(self.root, self.base_folder, f), md5)]

    def _check_integrity(self) -> bool:
        if self._missing_files():
            return False
        modified = self._modified_files()
        if not modified:
            return True
        if not self.allow_modified:
            return False
        folder = str(Path(self.root) / self.base_folder)
        if folder not in _WARNED:
            _WARNED.add(folder)
            warnings.warn(
                f"{Path(self.root) / self.base_folder}: {', '.join(modified)} differ from the official "
                f"{type(self).__mro__[2].__name__} release (MD5 mismatch); loading them anyway "
                "(dataset.allow_modified=true). Results on a modified copy are not comparable with the paper.",
                ModifiedDatasetWarning,
                stacklevel=2,
            )
        return True

    def _load_meta(self) -> None:
        # torchvision re-checks the meta file's MD5 here; integrity was already decided in _check_integrity.
        import pickle

        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        with open(path, "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class LenientCIFAR10(_LenientMixin, CIFAR10):
    pass


class LenientCIFAR100(_LenientMixin, CIFAR100):
    pass


CIFAR_CLASSES = {"cifar10": LenientCIFAR10, "cifar100": LenientCIFAR100}


class DataCorruptError(DataNotFoundError):
    """A dataset file is present but cannot be read (truncated, garbage, not a CIFAR batch).  Names the file."""


def root_variable(name: str) -> str:
    """The environment variable that sets ``dataset.root`` of ``name`` (configs/dataset/<name>.yaml):
    CIFAR-100 reads CRELU_CIFAR100_ROOT first and falls back to CRELU_DATA_ROOT."""
    if name == "cifar100" and (os.environ.get("CRELU_CIFAR100_ROOT") or not os.environ.get("CRELU_DATA_ROOT")):
        return "CRELU_CIFAR100_ROOT"
    return "CRELU_DATA_ROOT"


def _not_found_message(name: str, root: Path, cls: type, reason: str) -> str:
    folder = root / cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    var = root_variable(name)
    value = os.environ.get(var)
    if value and Path(value).expanduser().resolve() == root:
        where = f"{var}={value}"
        if var == "CRELU_CIFAR100_ROOT" and os.environ.get("CRELU_DATA_ROOT"):
            where += ", which takes precedence over CRELU_DATA_ROOT"
    elif value:
        where = f"dataset.root overrides {var}={value}"
    else:
        where = f"{var} is not set"
        if name == "cifar100":
            where += "; CIFAR-100 reads CRELU_CIFAR100_ROOT, else CRELU_DATA_ROOT"
    return (
        f"{name.upper()} not found: looked in {folder} for {', '.join(files)} ({where}).\n"
        f"  Reason: {reason}\n"
        f"  To fix, either\n"
        f"   * run once with network access and dataset.download=true (torchvision fetches {cls.filename}), or\n"
        f"   * download {cls.filename} ({cls.url}) on another machine, extract it so that {cls.base_folder}/ "
        f"sits inside a folder DIR, and point the suite at DIR:\n"
        f"       export {var}=DIR      (or pass dataset.root=DIR)"
    )


def _check_file(path: str, cls: type, meta: bool) -> str | None:
    """Why ``path`` is not a readable CIFAR batch (or meta) file, or None if it is."""
    import pickle

    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as e:  # truncated (EOFError / UnpicklingError), garbage, or unreadable
        return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if not isinstance(entry, dict):
        return f"holds a {type(entry).__name__}, not a dict"
    if meta:
        return None if cls.meta["key"] in entry else f"has no {cls.meta['key']!r} entry"
    label_key = "labels" if "labels" in entry else "fine_labels"
    if "data" not in entry or label_key not in entry:
        return f"has no 'data'/'{label_key}' entries"
    data = np.asarray(entry["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        return f"'data' is {data.dtype} {list(data.shape)}, not uint8 [N, 3072]"
    if len(entry[label_key]) != len(data):
        return f"{len(entry[label_key])} labels for {len(data)} images"
    return None


def _corrupt_message(name: str, root: Path, cls: type, train: bool) -> str | None:
    folder = root / cls.base_folder
    files = [(f, False) for f, _ in (cls.train_list if train else cls.test_list)] + [(cls.meta["filename"], True)]
    for fname, is_meta in files:
        why = _check_file(str(folder / fname), cls, is_meta)
        if why is not None:
            return (f"{name.upper()} file {folder / fname} is unreadable ({why}): truncated or not a CIFAR batch "
                    f"file; replace it with the official file from {cls.filename}")
    return None


def load_cifar(name: str, root: str | os.PathLike, *, train: bool, download: bool = True,
               allow_modified: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 [N, 32, 32, 3], labels int64 [N])`` of one CIFAR split.

    Raises :class:`DataNotFoundError` (with the path searched, the files expected and how to get them) when
    the files are missing and cannot be downloaded, or are modified and ``allow_modified`` is false, and
    :class:`DataCorruptError` (naming the file) when a file is there but cannot be read as a CIFAR batch.
    """
    if name not in CIFAR_CLASSES:
        raise ValueError(f"unknown CIFAR dataset {name!r}; use cifar10 or cifar100")
    cls = CIFAR_CLASSES[name]
    root = Path(root).expanduser().resolve()
    probe = cls.__new__(cls)
    probe.root, probe.allow_modified = str(root), allow_modified
    if not probe._missing_files() and probe._modified_files() and not allow_modified:
        raise DataNotFoundError(
            f"{root / cls.base_folder} holds files whose checksums differ from the official {name.upper()} "
            f"({', '.join(probe._modified_files())}) and dataset.allow_modified=false. Replace them with the "
            f"official files or set dataset.allow_modified=true."
        )
    fetch = download and bool(probe._missing_files())
    try:
        ds = cls.__new__(cls)
        ds.allow_modified = allow_modified
        ds.__init__(str(root), train=train, download=fetch)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise DataNotFoundError(_not_found_message(name, root, cls, str(e))) from None
    except OSError as e:  # download failed: no network, DNS, HTTP error, disk full
        if fetch:
            raise DataNotFoundError(_not_found_message(name, root, cls, f"download failed ({e})")) from None
        msg = _corrupt_message(name, root, cls, train)
        if msg is None:
            raise
        raise DataCorruptError(msg) from e
    except Exception as e:  # a file torchvision cannot unpickle or reshape: name it
        msg = _corrupt_message(name, root, cls, train)
        if msg is None:
            raise
        raise DataCorruptError(msg) from e
    return np.ascontiguousarray(ds.data), np.asarray(ds.targets, dtype=np.int64)
