"""The real CIFAR-10/100 images beside the repo (``../shared/data`` or ``$CRELU_SHARED_DATA``), when present.

Every expected count is read from the data files themselves (the pickled label lists), so these tests hold for
the size-capped real subset and for the full official release alike.  A clone without the folder skips them.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import shared_cifar_root

from crelu.config import compose_config
from crelu.data import load_cifar
from crelu.training import train

REAL = {d: shared_cifar_root(d) for d in ("cifar10", "cifar100")}
FILES = {  # (folder, train files, test files, label key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}


def _needs(dataset: str):
    return pytest.mark.skipif(
        REAL[dataset] is None,
        reason=f"real {dataset.upper()} images not present (../shared/data or $CRELU_SHARED_DATA)",
    )


def _pickled(root: Path, dataset: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """(data [N, 3072] uint8, labels [N]) straight from the pickles, independent of torchvision."""
    folder, train_files, test_files, key, _ = FILES[dataset]
    data, labels = [], []
    for name in train_files if train else test_files:
        with open(root / folder / name, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        data.append(np.asarray(d["data"], dtype=np.uint8))
        labels.append(np.asarray(d[key], dtype=np.int64))
    return np.concatenate(data), np.concatenate(labels)


def _load(dataset: str, train: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the subset's training files are not the official ones (warned)
        return load_cifar(dataset, REAL[dataset], train=train, download=False)


@pytest.mark.parametrize("dataset", [pytest.param(d, marks=_needs(d)) for d in FILES])
@pytest.mark.parametrize("split", ["train", "test"])
def test_real_images_load_with_the_counts_and_labels_of_their_files(dataset, split):
    raw, expected = _pickled(REAL[dataset], dataset, split == "train")
    x, y = _load(dataset, split == "train")
    classes = FILES[dataset][4]
    assert x.shape == (len(expected), 32, 32, 3) and len(expected) > 0
    assert np.array_equal(y, expected)
    assert y.min() >= 0 and y.max() == classes - 1
    # both the real subset and the official release are class-balanced
    counts = np.bincount(y, minlength=classes)
    assert counts.min() == counts.max() == len(y) // classes
    # pixels: the first and the last image as the official layout stores them (1024 R, 1024 G, 1024 B)
    for i in (0, len(y) - 1):
        assert np.array_equal(x[i], raw[i].reshape(3, 32, 32).transpose(1, 2, 0))


@pytest.mark.slow  # evaluation of the 2,500-image validation fold and the training set dominates (~1-3 min CPU)
@_needs("cifar100")
def test_real_cifar100_kfold_trains_on_the_other_folds(tiny_overrides):
    _, labels = _pickled(REAL["cifar100"], "cifar100", train=True)
    folds = 3
    cfg = compose_config(["experiment=table1/crelu", "dataset=cifar100", f"dataset.root={REAL['cifar100']}",
                          *tiny_overrides, "protocol=kfold", "protocol.fold=2", f"protocol.folds={folds}",
                          "dataset.test_subset=100", "schedule.epochs=1", "schedule.milestones=[]"])
    res = train(cfg)
    assert res.status == "finished" and 0 <= res.final["test_error"] <= 100
    assert res.record["epochs"][0]["train_loss"] < 10  # ln(100) = 4.6 at chance
    data = res.record["data"]
    assert data["train_size"] + data["val_size"] == len(labels) and data["test_size"] == 100
    # stratified folds of a balanced set: each fold holds the same share of every class
    assert data["val_size"] == pytest.approx(len(labels) / folds, abs=100)
