"""10-patch / centre-crop evaluation against hand computations (PAPER_SPEC §4.4)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from crelu.evaluation.tenpatch import (
    average_softmax,
    center_crop,
    crop_error_counts,
    crop_offsets,
    errors_from_counts,
    ten_crops,
    topk_wrong,
)


class FirstRow(nn.Module):
    """Logits of a patch = the first K pixels of its top row in channel 0: a known function of the crop."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0, : self.k]


def test_crop_offsets_and_ten_crops_by_hand():
    x = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).view(2, 3, 10, 12)
    assert crop_offsets(10, 12, 7) == [(0, 0), (0, 5), (3, 0), (3, 5), (2, 2)]  # round(1.5) = 2, round(2.5) = 2
    crops = ten_crops(x, 7)
    assert crops.shape == (10, 2, 3, 7, 7)
    for i, (t, l) in enumerate([(0, 0), (0, 5), (3, 0), (3, 5), (2, 2)]):
        assert torch.equal(crops[i], x[:, :, t : t + 7, l : l + 7])
        assert torch.equal(crops[5 + i], x[:, :, t : t + 7, l : l + 7].flip(-1))
    assert torch.equal(center_crop(x, 7), crops[4])
    with pytest.raises(ValueError, match="does not fit"):
        crop_offsets(6, 12, 7)


def test_topk_and_average_softmax_by_hand():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]], [[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]])  # [P=2, N=2, K=3]
    avg = average_softmax(logits)
    e = [math.exp(v) for v in (0.0, 1.0, 2.0)]
    s = sum(e)
    assert avg[0].tolist() == pytest.approx([(e[0] + e[2]) / (2 * s), 2 * e[1] / (2 * s), (e[2] + e[0]) / (2 * s)])
    wrong = topk_wrong(torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1]]), torch.tensor([2, 0]), ks=(1, 2, 5))
    assert {k: int(v) for k, v in wrong.items()} == {1: 1, 2: 0, 5: 0}  # k > K counts every image as right


def _hand_errors(images: torch.Tensor, labels: torch.Tensor, size: int, k: int) -> dict[str, float]:
    """Python loops over images and patches: top-1/top-5 errors of the centre patch and the 10-patch average."""
    n, _, h, w = images.shape
    offsets = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size),
               (int(round((h - size) / 2)), int(round((w - size) / 2)))]
    out = {"top1_center": 0.0, "top5_center": 0.0, "top1_10patch": 0.0, "top5_10patch": 0.0}
    for i in range(n):
        probs = []
        for mirror in (False, True):
            for t, l in offsets:
                row = images[i, 0, t, l : l + size].tolist()
                row = row[::-1] if mirror else row
                z = [math.exp(v) for v in row[:k]]
                probs.append([v / sum(z) for v in z])
        centre = probs[4]
        mean = [sum(p[c] for p in probs) / 10 for c in range(k)]
        for name, scores in (("center", centre), ("10patch", mean)):
            rank = sorted(range(k), key=lambda c: -scores[c])
            out[f"top1_{name}"] += 100.0 / n * (rank[0] != labels[i])
            out[f"top5_{name}"] += 100.0 / n * (labels[i] not in rank[:5])
    return out


@pytest.mark.parametrize("eval_mode", ["center", "tenpatch", "both"])
def test_crop_error_counts_match_a_hand_computation(eval_mode):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(40, 3, 11, 13, generator=g) * 2
    labels = torch.randint(0, 8, (40,), generator=g)
    batches = [(images[:16], labels[:16]), (images[16:], labels[16:])]
    counts = crop_error_counts(FirstRow(8), batches, size=9, eval_mode=eval_mode)
    got = errors_from_counts(counts)
    want = _hand_errors(images, labels, 9, 8)
    keys = {"center": ["top1_center", "top5_center"], "tenpatch": ["top1_10patch", "top5_10patch"]}
    expected = keys.get(eval_mode, keys["center"] + keys["tenpatch"])
    assert sorted(got) == sorted(expected) and int(counts["n"]) == 40
    for key in expected:
        assert got[key] == pytest.approx(want[key])
    if eval_mode == "both":
        assert got["top1_10patch"] != got["top1_center"]  # the averaging matters on this data
        assert 0 < got["top5_10patch"] < got["top1_10patch"]


def test_errors_need_images_and_modes_are_checked():
    empty = crop_error_counts(FirstRow(3), [], size=3, eval_mode="both")  # a DDP rank without images
    assert sorted(empty) == ["n", "wrong1_10patch", "wrong1_center", "wrong5_10patch", "wrong5_center"]
    assert all(int(v) == 0 for v in empty.values())
    with pytest.raises(ValueError, match="no validation images"):
        errors_from_counts(empty)
    with pytest.raises(ValueError, match="eval_mode"):
        crop_error_counts(FirstRow(3), [], size=3, eval_mode="twelve")


def test_top1_breaks_ties_like_argmax():
    """A ReLU classifier emits exact zeros: tied scores must count as the training loop's argmax counts them."""
    from crelu.evaluation.tenpatch import topk_wrong

    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.3, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2, 3])
    wrong = topk_wrong(scores, labels, ks=(1, 2))
    assert int(wrong[1]) == int((scores.argmax(1) != labels).sum()) == 2
    assert int(wrong[2]) == 1  # row 3: the label (3) is not among the first two of four tied classes
