"""Table 6 pair / non-pair outgoing-weight correlations (docs/analysis.md)."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from crelu.analysis.table6 import (
    OutgoingStats,
    model_table6,
    outgoing_correlations,
    read_paper_table6,
    write_table6,
)
from crelu.config.schema import ModelConfig
from crelu.models import build_model

R = 1 / math.sqrt(2)


def hand_weight() -> torch.Tensor:
    """F = 2 CReLU filters -> next conv with 2 outputs, 1x1 kernel.  Columns = outgoing vectors:
    v0+ = (1, 0), v1+ = (0, 1), v0- = (2, 2), v1- = (-1, 0)."""
    return torch.tensor([[1.0, 0.0, 2.0, -1.0], [0.0, 1.0, 2.0, 0.0]]).view(2, 4, 1, 1)


def test_hand_built_weights_all_nonpairs():
    pair, non = outgoing_correlations(hand_weight(), 2, "all")
    # pair: cos(v0+, v0-) = 1/sqrt2, cos(v1+, v1-) = 0; non-pair: cos(v0+, v1-) = -1, cos(v1+, v0-) = 1/sqrt2
    assert pair.tolist() == pytest.approx([R, 0.0])
    assert sorted(non.tolist()) == pytest.approx([-1.0, R])
    s = OutgoingStats("conv1", 2, pair, non).summary()
    assert s["pair_abs_mean"] == pytest.approx(R / 2) and s["pair_abs_std"] == pytest.approx(R / 2)
    assert s["nonpair_abs_mean"] == pytest.approx((1 + R) / 2)
    assert s["nonpair_abs_std"] == pytest.approx((1 - R) / 2)
    assert s["nonpair_signed_mean"] == pytest.approx((R - 1) / 2)
    assert s["n_pair"] == 2 and s["n_nonpair"] == 2


def test_random_nonpair_picks_one_other_j_per_i():
    pair, non = outgoing_correlations(hand_weight(), 2, "random", seed=3)
    assert non.tolist() == pytest.approx([-1.0, R])  # F = 2: the only j != i
    torch.manual_seed(0)
    v = torch.randn(5, 2 * 9, 3, 3)
    _, all_non = outgoing_correlations(v, 9, "all")
    _, rnd = outgoing_correlations(v, 9, "random", seed=0)
    assert all_non.numel() == 72 and rnd.numel() == 9
    assert all(any(abs(r - a) < 1e-12 for a in all_non.tolist()) for r in rnd.tolist())


def test_negated_outgoing_weights_give_pair_minus_one():
    torch.manual_seed(0)
    pos = torch.randn(6, 4, 3, 3)
    pair, _ = outgoing_correlations(torch.cat([pos, -pos], 1), 4)
    assert torch.allclose(pair, torch.full((4,), -1.0, dtype=torch.float64))


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="2F = 6"):
        outgoing_correlations(torch.randn(2, 4, 1, 1), 3)
    with pytest.raises(ValueError, match="nonpair"):
        outgoing_correlations(hand_weight(), 2, "some")


def test_model_table6_rows_and_writer(tmp_path):
    cfg = OmegaConf.structured(ModelConfig)
    cfg.family, cfg.activation_layers, cfg.width_mult = "allcnn_b", {"crelu": list(range(1, 8))}, 0.0625
    stats = model_table6(build_model(cfg, 10))
    assert [s.layer for s in stats] == [f"conv{i}" for i in range(1, 8)]
    paper_csv = tmp_path / "paper.csv"
    paper_csv.write_text("layer,pair_mean,pair_std,nonpair_mean,nonpair_std\nconv1,0.372,0.372,0.165,0.154\n")
    paper = read_paper_table6(paper_csv)
    paths = write_table6(stats, paper, tmp_path, source="unit test")
    csv_text, md = paths[0].read_text(), paths[1].read_text()
    assert csv_text.splitlines()[1].startswith("conv1,6,0.372000,0.372000,0.165000,0.154000,")
    assert len(csv_text.splitlines()) == 8
    assert "| conv1 | 0.372 ± 0.372 |" in md and "| conv2 | – |" in md


def test_repo_paper_values_file_matches_spec():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "results" / "paper_table6.csv"
    paper = read_paper_table6(path)
    assert list(paper) == [f"conv{i}" for i in range(1, 8)]
    assert paper["conv3"] == {
        "pair_mean": 0.462,
        "pair_std": 0.249,
        "nonpair_mean": 0.120,
        "nonpair_std": 0.120,
    }
    assert paper["conv7"]["nonpair_std"] == 0.070
