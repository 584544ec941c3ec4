"""Index splits of a training set: 10-fold partitions, the Single hold-out, stratified subsets.

Every function takes the label vector and an explicit seed and draws only from a local
``numpy.random.Generator``, so a split depends on ``(labels, seed)`` alone: never on ``torch``'s or
``numpy``'s global RNG, the training seed, or the order of other calls.  Returned index arrays are sorted
``int64``.

Sources (docs/recipes.md):

* The paper splits the 50k CIFAR training images into 10 folds of 5k [PAPER]; *how* is not stated.
  INFERRED: a class-stratified random partition with a fixed ``split_seed`` independent of the training seed.
* Single holds out part of the training set [PAPER]; size and method are not stated.  INFERRED default: a
  class-stratified random hold-out of 10k (Goodfellow et al. 2013 use 40k/10k).  ``method="last"`` gives
  Goodfellow's literal split (the last ``holdout`` images) as the alternative knob.
"""

from __future__ import annotations

import numpy as np

__all__ = ["holdout_split", "kfold_indices", "stratified_folds", "stratified_subset"]


def _labels(labels) -> np.ndarray:
    """Labels as a 1-D int64 array (accepts lists, numpy arrays and CPU torch tensors)."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    return y.astype(np.int64, copy=False)


def _class_members(y: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of each class (classes in ascending label order), each randomly permuted by ``rng``."""
    return [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]


def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` over classes proportionally to ``counts`` (largest-remainder rounding; sums exactly to n).

    Ties in the fractional parts go to the lower class label, so the result is deterministic.
    """
    total = int(counts.sum())
    quota = counts * n / total
    take = np.floor(quota).astype(np.int64)
    short = n - int(take.sum())
    if short:
        frac = quota - take
        order = np.lexsort((np.arange(len(counts)), -frac))  # largest fraction first, then lowest label
        take[order[:short]] += 1
    return take


def stratified_folds(labels, n_folds: int, split_seed: int) -> list[np.ndarray]:
    """Partition ``range(len(labels))`` into ``n_folds`` disjoint, class-stratified folds.

    Each class's members are shuffled (seeded by ``split_seed``) and dealt round-robin, continuing the deal
    from class to class.  Hence the folds cover every index exactly once, every fold's size differs from
    every other's by at most 1, and so does every class's count per fold.  For CIFAR (5000 images per
    class, 10 folds) each fold holds exactly 500 images of every class.
    """
    y = _labels(labels)
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if len(y) < n_folds:
        raise ValueError(f"cannot make {n_folds} folds from {len(y)} examples")
    rng = np.random.default_rng(split_seed)
    order = np.concatenate(_class_members(y, rng))
    assignment = np.arange(len(order)) % n_folds
    return [np.sort(order[assignment == k]) for k in range(n_folds)]


def kfold_indices(labels, n_folds: int, fold: int, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)`` for 0-based ``fold`` of :func:`stratified_folds`.

    Validate on that fold, train on the others.
    """
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in 0..{n_folds - 1}, got {fold}")
    folds = stratified_folds(labels, n_folds, split_seed)
    train = np.sort(np.concatenate([f for k, f in enumerate(folds) if k != fold]))
    return train, folds[fold]


def holdout_split(
    labels, holdout: int, split_seed: int, method: str = "stratified"
) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, holdout_idx)`` for the Single protocol's phase 1 (docs/recipes.md).

    * ``method="stratified"`` (INFERRED default): each class contributes ``holdout * n_c / N`` examples
      (largest-remainder rounding, so exactly ``holdout`` in total), drawn at random with ``split_seed``.
      CIFAR with ``holdout=10000``: 1000 per class.
    * ``method="last"``: the last ``holdout`` indices, Goodfellow et al.'s 0-40000 / 40000-50000 split
      (``split_seed`` is ignored).
    """
    y = _labels(labels)
    if not 0 < holdout < len(y):
        raise ValueError(f"holdout must be in 1..{len(y) - 1}, got {holdout}")
    if method == "last":
        idx = np.arange(len(y), dtype=np.int64)
        return idx[: len(y) - holdout], idx[len(y) - holdout :]
    if method != "stratified":
        raise ValueError(f"method must be 'stratified' or 'last', got {method!r}")
    held = _stratified_take(y, holdout, split_seed)
    mask = np.ones(len(y), dtype=bool)
    mask[held] = False
    return np.flatnonzero(mask).astype(np.int64), held


def stratified_subset(labels, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` examples with the class proportions of ``labels`` (smoke runs)."""
    y = _labels(labels)
    if not 0 < n <= len(y):
        raise ValueError(f"n must be in 1..{len(y)}, got {n}")
    return _stratified_take(y, n, seed)


def _stratified_take(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    members = _class_members(y, rng)
    take = _allocate(np.array([len(m) for m in members]), n)
    return np.sort(np.concatenate([m[:t] for m, t in zip(members, take)])).astype(np.int64)
