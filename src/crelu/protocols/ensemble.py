"""The 10-fold "Average" and "Vote" numbers of Tables 1 and 2 (docs/recipes.md).

* **Average** = mean test error of the fold networks ± standard error.  The paper does not state the ddof
  of the standard deviation; INFERRED ddof = 1 (``se``), with the ddof = 0 value kept as ``se_ddof0``.
* **Vote** = test error of the model average of the fold networks.  The paper does not say how networks are
  combined; INFERRED primary number: average the softmax probabilities, then take the argmax (``prob_avg``).
  Secondary, clearly labelled: a majority vote of the networks' argmaxes, ties broken by the mean probability
  (``majority``).

Vote is computed from each run's saved ``test_logits.pt`` (``{"logits": float [N, C], "labels": int64 [N]}``),
never by re-running a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from crelu.results.record import RecordError, RunRecord

__all__ = ["average", "load_fold_logits", "softmax", "vote_error"]


def average(errors: Iterable[float]) -> dict[str, float | int]:
    """``{"mean", "se", "se_ddof0", "std", "n"}`` of per-network errors (``std`` and ``se`` use ddof = 1).

    ``se = std(ddof=1) / sqrt(n)``; with one network ``se`` and ``std`` are NaN.  Raises on an empty input.
    """
    x = np.asarray(list(errors), dtype=np.float64)
    n = int(x.size)
    if n == 0:
        raise ValueError("average() needs at least one error value")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"non-finite error values: {x.tolist()}")
    std1 = float(np.std(x, ddof=1)) if n > 1 else math.nan
    std0 = float(np.std(x, ddof=0))
    return {
        "mean": float(x.mean()),
        "se": std1 / math.sqrt(n) if n > 1 else math.nan,
        "se_ddof0": std0 / math.sqrt(n),
        "std": std1,
        "n": n,
    }


def _as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def softmax(logits) -> np.ndarray:
    """Row-wise softmax in float64 (max-subtracted, so large logits do not overflow)."""
    z = _as_numpy(logits).astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def vote_error(logits_list: Sequence, labels) -> dict[str, float | int]:
    """Ensemble test error in percent of several networks' logits on the same images.

    Returns ``{"prob_avg", "majority", "n"}``:

    * ``prob_avg`` (primary): error of ``argmax(mean_k softmax(logits_k))``;
    * ``majority`` (secondary): error of the most frequent argmax among the networks; when several classes get
      the same number of votes, the one with the highest mean probability wins (an exact tie of the mean
      probability then goes to the lowest class index).
    """
    if len(logits_list) == 0:
        raise ValueError("vote_error() needs at least one network's logits")
    y = _as_numpy(labels).astype(np.int64)
    probs = [softmax(lg) for lg in logits_list]
    shapes = {p.shape for p in probs}
    if len(shapes) != 1:
        raise ValueError(f"logits of different shapes: {sorted(shapes)}")
    (n_img, n_cls) = probs[0].shape
    if y.shape != (n_img,):
        raise ValueError(f"labels have shape {y.shape}, logits have {n_img} rows")
    mean_p = np.mean(probs, axis=0)
    pred_avg = mean_p.argmax(axis=1)

    votes = np.zeros((n_img, n_cls), dtype=np.int64)
    rows = np.arange(n_img)
    for p in probs:
        np.add.at(votes, (rows, p.argmax(axis=1)), 1)
    top = votes == votes.max(axis=1, keepdims=True)
    pred_maj = np.where(top, mean_p, -np.inf).argmax(axis=1)

    return {
        "prob_avg": float(100.0 * np.mean(pred_avg != y)),
        "majority": float(100.0 * np.mean(pred_maj != y)),
        "n": len(probs),
    }


def load_logits_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(logits [N, C] float, labels [N] int64)`` from one ``test_logits.pt``; RecordError if unusable."""
    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RecordError(f"missing logits file {path}") from None
    except Exception as e:  # any unpickling failure means the file is unusable
        raise RecordError(f"unreadable logits file {path}: {e}") from None
    if not isinstance(obj, dict) or "logits" not in obj or "labels" not in obj:
        raise RecordError(f"{path} must hold a dict with 'logits' and 'labels'")
    logits, labels = _as_numpy(obj["logits"]), _as_numpy(obj["labels"]).astype(np.int64)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise RecordError(f"{path}: logits {logits.shape} and labels {labels.shape} do not match")
    return logits, labels


def load_fold_logits(records: Sequence[RunRecord]) -> tuple[list[np.ndarray], np.ndarray]:
    """Read every record's test logits; return ``(logits_list, labels)``.

    Raises :class:`RecordError` if a file is missing or unreadable, or if the networks were not evaluated on
    the same test labels in the same order (ensembling them would then be meaningless).
    """
    if not records:
        raise RecordError("load_fold_logits() got no records")
    logits_list: list[np.ndarray] = []
    ref_labels: np.ndarray | None = None
    ref_dir = None
    for rec in records:
        logits, labels = load_logits_file(rec.logits_path())
        if ref_labels is None:
            ref_labels, ref_dir = labels, rec.run_dir
        elif labels.shape != ref_labels.shape or not np.array_equal(labels, ref_labels):
            raise RecordError(
                f"test labels of {rec.run_dir} differ from those of {ref_dir}: the runs were not "
                "evaluated on the same test set in the same order"
            )
        logits_list.append(logits)
    assert ref_labels is not None
    return logits_list, ref_labels
