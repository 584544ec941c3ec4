"""Average +- SE and Vote against hand-computed values; logits loading from run directories."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crelu.protocols import average, load_fold_logits, softmax, vote_error
from crelu.results.record import RecordError, RunRecord


def test_average_matches_hand_computation():
    a = average([1.0, 2.0, 3.0, 4.0])
    # mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5
    assert a["mean"] == pytest.approx(2.5)
    assert a["std"] == pytest.approx(math.sqrt(5 / 3))
    assert a["se"] == pytest.approx(math.sqrt(5 / 3) / 2)  # 0.645497
    assert a["se_ddof0"] == pytest.approx(math.sqrt(5 / 4) / 2)  # 0.559017
    assert a["n"] == 4


def test_average_edge_cases():
    one = average([7.5])
    assert one["mean"] == 7.5 and math.isnan(one["se"]) and one["se_ddof0"] == 0.0 and one["n"] == 1
    with pytest.raises(ValueError):
        average([])
    with pytest.raises(ValueError):
        average([1.0, float("nan")])


def test_softmax_is_stable():
    p = softmax(np.array([[1000.0, 1000.0], [0.0, math.log(3.0)]]))
    assert np.allclose(p, [[0.5, 0.5], [0.25, 0.75]])


# Three networks, two images, three classes.
# image 0 (label 0): A and B weakly prefer class 0, C strongly prefers class 1.
#   majority: class 0 (2 votes) -> correct.  prob-avg: mean p = [0.2596, 0.5403, 0.2001] -> class 1 -> wrong.
# image 1 (label 2): A -> 2 (strong), B -> 1 (weak), C -> 0 (weak): a 1-1-1 tie, broken by the mean
#   probability, which favours class 2 -> correct (lowest-index tie breaking would say class 0: wrong).
A = [[0.2, 0.0, 0.0], [0.0, 0.0, 5.0]]
B = [[0.2, 0.0, 0.0], [0.0, 1.0, 0.0]]
C = [[0.0, 10.0, 0.0], [1.0, 0.0, 0.0]]
LABELS = [0, 2]


def test_vote_hand_made_logits_with_tie():
    logits = [torch.tensor(x) for x in (A, B, C)]
    v = vote_error(logits, torch.tensor(LABELS))
    assert v == {"prob_avg": 50.0, "majority": 0.0, "n": 3}
    # the hand numbers quoted above
    e2 = math.exp(0.2)
    weak0 = e2 / (e2 + 2)
    strong1 = math.exp(10) / (math.exp(10) + 2)
    mean0 = (2 * weak0 + (1 - strong1) / 2) / 3
    mean1 = (2 * (1 - weak0) / 2 + strong1) / 3
    assert mean1 > mean0
    assert np.mean([softmax(np.array(x))[0] for x in (A, B, C)], axis=0) == pytest.approx(
        [mean0, mean1, 1 - mean0 - mean1]
    )


def test_vote_single_network_equals_its_error():
    v = vote_error([np.array(A)], np.array(LABELS))
    assert v["prob_avg"] == v["majority"] == 0.0  # A predicts [0, 2]
    with pytest.raises(ValueError):
        vote_error([np.array(A), np.zeros((3, 3))], np.array(LABELS))
    with pytest.raises(ValueError):
        vote_error([], np.array(LABELS))


def _rec(tmp_path, name, logits, labels) -> RunRecord:
    rec = RunRecord(tmp_path / name, {"status": "finished", "artifacts": {"test_logits": "test_logits.pt"}})
    rec.save()
    torch.save(
        {
            "logits": torch.tensor(logits, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
        },
        rec.run_dir / "test_logits.pt",
    )
    return rec


def test_load_fold_logits(tmp_path):
    recs = [_rec(tmp_path, n, x, LABELS) for n, x in (("a", A), ("b", B), ("c", C))]
    logits, labels = load_fold_logits(recs)
    assert len(logits) == 3 and np.array_equal(labels, LABELS)
    assert vote_error(logits, labels)["prob_avg"] == 50.0


def test_load_fold_logits_rejects_mismatch_and_missing(tmp_path):
    a = _rec(tmp_path, "a", A, LABELS)
    b = _rec(tmp_path, "b", B, [0, 1])
    with pytest.raises(RecordError, match="differ"):
        load_fold_logits([a, b])
    missing = RunRecord(tmp_path / "m", {"status": "finished"})
    missing.save()
    with pytest.raises(RecordError, match="missing"):
        load_fold_logits([a, missing])
