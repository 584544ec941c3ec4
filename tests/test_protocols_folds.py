"""Fold, hold-out and subset splits: stratified, disjoint, covering, deterministic, no global RNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crelu.protocols import holdout_split, kfold_indices, stratified_folds, stratified_subset

BALANCED = np.repeat(np.arange(10), 50)  # 10 classes x 50
IMBALANCED = np.array([0] * 37 + [1] * 23 + [2] * 11 + [3] * 2)  # 73 examples


@pytest.mark.parametrize("labels", [BALANCED, IMBALANCED])
@pytest.mark.parametrize("k", [2, 5, 10])
def test_folds_partition_and_balance(labels, k):
    folds = stratified_folds(labels, k, split_seed=7)
    assert len(folds) == k
    allidx = np.concatenate(folds)
    assert np.array_equal(np.sort(allidx), np.arange(len(labels)))  # cover + disjoint
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for c in np.unique(labels):
        per_fold = [int(np.sum(labels[f] == c)) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)
    for f in folds:
        assert f.dtype == np.int64 and np.all(np.diff(f) > 0)


def test_cifar_like_folds_are_exact():
    folds = stratified_folds(BALANCED, 10, split_seed=0)
    for f in folds:
        assert np.array_equal(np.bincount(BALANCED[f], minlength=10), np.full(10, 5))


def test_folds_deterministic_and_seed_dependent():
    a = stratified_folds(BALANCED, 10, 123)
    torch.manual_seed(999)
    np.random.seed(999)
    _ = torch.rand(10), np.random.rand(10)
    b = stratified_folds(BALANCED, 10, 123)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = stratified_folds(BALANCED, 10, 124)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not np.array_equal(a[0], np.arange(0, 500, 10))  # actually shuffled, not a stride


def test_folds_accept_torch_labels_and_reject_bad_input():
    a = stratified_folds(torch.as_tensor(BALANCED), 5, 1)
    b = stratified_folds(BALANCED.tolist(), 5, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError):
        stratified_folds(BALANCED, 1, 0)
    with pytest.raises(ValueError):
        stratified_folds(np.zeros((2, 2), dtype=int), 2, 0)
    with pytest.raises(ValueError):
        stratified_folds(np.array([0.5, 1.5]), 2, 0)


def test_kfold_indices():
    folds = stratified_folds(IMBALANCED, 5, 3)
    seen = []
    for k in range(5):
        train, val = kfold_indices(IMBALANCED, 5, k, 3)
        assert np.array_equal(val, folds[k])
        assert np.intersect1d(train, val).size == 0
        assert np.array_equal(np.union1d(train, val), np.arange(len(IMBALANCED)))
        seen.append(val)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(len(IMBALANCED)))
    with pytest.raises(ValueError):
        kfold_indices(IMBALANCED, 5, 5, 3)


def test_holdout_split_stratified():
    train, held = holdout_split(BALANCED, 100, split_seed=5)
    assert len(held) == 100 and len(train) == 400
    assert np.array_equal(np.bincount(BALANCED[held], minlength=10), np.full(10, 10))
    assert np.intersect1d(train, held).size == 0
    assert np.array_equal(np.union1d(train, held), np.arange(500))
    again = holdout_split(BALANCED, 100, split_seed=5)
    assert np.array_equal(again[1], held)
    # imbalanced: exact total, proportional counts (largest remainder)
    _, h = holdout_split(IMBALANCED, 20, split_seed=1)
    assert len(h) == 20
    counts = np.bincount(IMBALANCED[h], minlength=4)
    expected = 20 * np.bincount(IMBALANCED) / len(IMBALANCED)
    assert np.all(np.abs(counts - expected) < 1)


def test_holdout_split_last_and_errors():
    train, held = holdout_split(BALANCED, 100, split_seed=5, method="last")
    assert np.array_equal(held, np.arange(400, 500)) and np.array_equal(train, np.arange(400))
    with pytest.raises(ValueError):
        holdout_split(BALANCED, 0, 1)
    with pytest.raises(ValueError):
        holdout_split(BALANCED, 10, 1, method="first")


def test_stratified_subset():
    idx = stratified_subset(BALANCED, 30, seed=2)
    assert len(idx) == 30 and len(np.unique(idx)) == 30
    assert np.array_equal(np.bincount(BALANCED[idx], minlength=10), np.full(10, 3))
    assert np.array_equal(idx, stratified_subset(BALANCED, 30, seed=2))
    assert not np.array_equal(idx, stratified_subset(BALANCED, 30, seed=3))
    assert np.array_equal(stratified_subset(BALANCED, 500, seed=0), np.arange(500))
