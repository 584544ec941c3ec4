"""Invariance scores (docs/analysis.md), trajectories and layer read-outs."""

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from crelu.analysis.features import centre_response_fn, layer_outputs, readout_points
from crelu.analysis.invariance import InvarianceConfig, invariance_scores, layer_score, summarise, thresholds
from crelu.analysis.transforms import TrajectoryConfig, apply_trajectory, trajectory
from crelu.config.schema import ModelConfig
from crelu.models import build_model


def smooth_images(n=1500, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return F.avg_pool2d(torch.randn(n, 1, size, size, generator=gen), 3, 1, 1)


def two_units(x):
    """Unit 0: mean over the whole image (ignores translations); unit 1: one off-centre pixel (does not)."""
    return {"layer": torch.stack([x.mean(dim=(1, 2, 3)), x[:, 0, 3, 5]], 1)}


def test_unit_ignoring_the_transformation_scores_higher():
    cfg = InvarianceConfig(num_top=15, trajectory=TrajectoryConfig(families=("translation",)))
    us = invariance_scores(two_units, smooth_images(), cfg)["translation"]["layer"]
    assert us.global_rate.tolist() == pytest.approx([0.01, 0.01], abs=1e-3)
    assert us.score[0] > 3 * us.score[1]
    assert us.score[0] <= 1 / cfg.firing_rate  # S = L / G with L <= 1


def test_unit_firing_on_its_whole_trajectory_reaches_the_maximum_score():
    # Only the identity in the trajectory and |Z| = 1% of the images: every z in Z fires on all of T(z).
    cfg = InvarianceConfig(num_top=5, trajectory=TrajectoryConfig(families=("rotation",), max_angle=0.0))
    us = invariance_scores(lambda x: {"l": x.mean((1, 2, 3))[:, None]}, smooth_images(500), cfg)["rotation"][
        "l"
    ]
    assert us.local_rate.item() == pytest.approx(1.0)
    assert us.score.item() == pytest.approx(100.0)


def test_dead_unit_gets_no_score_and_layer_score_uses_top_fraction():
    def fn(x):
        return {"l": torch.stack([torch.zeros(len(x)), x.mean((1, 2, 3))], 1)}

    cfg = InvarianceConfig(num_top=5, trajectory=TrajectoryConfig(families=("scaling",)))
    s = invariance_scores(fn, smooth_images(400), cfg)
    assert math.isnan(s["scaling"]["l"].score[0].item()) and math.isfinite(s["scaling"]["l"].score[1].item())
    table = summarise(s)
    assert table["l"]["scaling"] == pytest.approx(s["scaling"]["l"].score[1].item())
    assert table["l"]["mean"] == table["l"]["scaling"]
    assert (
        layer_score(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])) == 9.5
    )  # top 20% = 2
    assert layer_score(torch.tensor([3.0, float("nan")])) == 3.0


def test_thresholds_give_one_percent_firing():
    h = torch.randn(10000, 3)
    t = thresholds(h, 0.01)
    assert ((h > t).float().mean(0) - 0.01).abs().max() < 5e-4


def test_translation_trajectory_is_an_exact_shift_with_identity():
    x = torch.arange(64.0).view(1, 1, 8, 8)
    thetas = trajectory("translation", 8, 8, TrajectoryConfig(max_shift=2, shift_step=2))
    assert thetas.shape == (9, 2, 3)
    y = apply_trajectory(x, thetas)
    assert torch.allclose(y[4], x[0], atol=1e-5)  # (dx, dy) = (0, 0)
    # index 5 is (dx, dy) = (2, 0): content moves 2 px right
    assert torch.allclose(y[5, 0, :, 2:], x[0, 0, :, :-2], atol=1e-4)
    sizes = {f: len(trajectory(f, 8, 8, TrajectoryConfig())) for f in ("translation", "rotation", "scaling")}
    assert sizes == {"translation": 25, "rotation": 11, "scaling": 5}


def test_readout_after_activation_or_after_pool():
    cfg = OmegaConf.structured(ModelConfig)
    cfg.activation_layers, cfg.width_mult = {"crelu": [1, 2, 3]}, 0.125
    model = build_model(cfg, 10).eval()
    assert readout_points(model, [1, 3]) == {"act1": 1, "act3": 3}
    assert readout_points(model, [1, 3], after_pool=True) == {"act1": 1, "pool1": 3}
    x = torch.randn(4, 3, 12, 12)
    outs = layer_outputs(model, x, [2, 3], after_pool=True)
    assert outs[2].shape == (4, 24, 12, 12) and outs[3].shape == (4, 24, 6, 6)  # 2F channels; pooled
    r = centre_response_fn(model, [1, 3], after_pool=True)(x)
    assert r["conv1"].shape == (4, 24) and torch.equal(r["conv3"], outs[3][:, :, 3, 3])


def test_paper_net_scores_end_to_end_are_finite():
    cfg = OmegaConf.structured(ModelConfig)
    cfg.activation_layers, cfg.width_mult = {"crelu": [1, 2]}, 0.125
    torch.manual_seed(0)
    model = build_model(cfg, 10).eval()
    imgs = torch.randn(300, 3, 12, 12)
    inv = InvarianceConfig(
        num_top=5, trajectory=TrajectoryConfig(max_shift=2, families=("translation", "scaling"))
    )
    table = summarise(invariance_scores(centre_response_fn(model, [1, 2]), imgs, inv))
    assert set(table) == {"conv1", "conv2"}
    assert all(math.isfinite(v) and 0 <= v <= 100 for row in table.values() for v in row.values())
