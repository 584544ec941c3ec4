"""Figures are written (PNG + PDF, Agg canvas) and non-empty."""

import torch

from crelu.analysis.pairing import LayerPairing, pairing, random_mu
from crelu.analysis.plots import (
    plot_filter_pairs,
    plot_invariance,
    plot_pairing_histograms,
    plot_reconstructions,
)


def _check(paths):
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"


def test_all_figures(tmp_path):
    torch.manual_seed(0)
    w = torch.randn(10, 3, 5, 5)
    mu, partner = pairing(w)
    lp = LayerPairing("conv1", 10, 75, mu, random_mu(10, 75), partner)
    _check(plot_pairing_histograms([("ReLU", [lp, lp]), ("CReLU", [lp])], tmp_path / "hist"))
    _check(plot_filter_pairs(w, partner, tmp_path / "pairs", max_pairs=6, columns=4, title="t"))
    scores = {
        m: {f"conv{i}": {"translation": i + k, "mean": i} for i in range(1, 4)} for k, m in enumerate("AB")
    }
    _check(plot_invariance(scores, tmp_path / "inv", title="inv"))
    imgs = torch.rand(2, 3, 8, 8)
    _check(
        plot_reconstructions(
            imgs,
            [("a", [("conv1", imgs[0])]), ("b", [("conv1", imgs[1])] * 2)],
            tmp_path / "rec",
            title="rec",
        )
    )
    assert not list(tmp_path.glob(".*tmp-*"))  # atomic writes leave no temp files
