"""Pairing filters and µ (docs/analysis.md)."""

import pytest
import torch
from omegaconf import OmegaConf

from crelu.analysis.pairing import conv_layers, layer_pairings, load_alexnet, pairing, random_mu, unit_filters
from crelu.config.schema import ModelConfig
from crelu.models import build_model


def test_unit_filters_are_unit_norm_and_zero_safe():
    w = torch.randn(5, 3, 3, 3)
    w[2] = 0
    phi = unit_filters(w)
    norms = phi.norm(dim=1)
    assert torch.allclose(norms[[0, 1, 3, 4]], torch.ones(4, dtype=torch.float64))
    assert norms[2] == 0 and torch.isfinite(phi).all()


def test_exact_negated_pairs_have_mu_minus_one_and_find_each_other():
    torch.manual_seed(0)
    base = torch.randn(4, 3, 5, 5)
    w = torch.cat([base, -2.5 * base[:2]])  # filters 4, 5 are scaled negations of 0, 1
    mu, partner = pairing(w)
    assert torch.allclose(mu[[0, 1, 4, 5]], torch.full((4,), -1.0, dtype=torch.float64))
    assert partner[[0, 1, 4, 5]].tolist() == [4, 5, 0, 1]
    assert (mu[[2, 3]] > -0.9).all()


def test_pairing_excludes_self_and_matches_brute_force():
    torch.manual_seed(1)
    w = torch.randn(7, 11)
    mu, partner = pairing(w)
    phi = torch.nn.functional.normalize(w.double(), dim=1)
    for i in range(7):
        cos = {j: float(phi[i] @ phi[j]) for j in range(7) if j != i}
        j = min(cos, key=cos.get)
        assert partner[i] == j != i and mu[i].item() == pytest.approx(cos[j])


@pytest.mark.parametrize(
    ("filters", "dim", "expected", "sd"), [(96, 363, -0.130, 0.021), (256, 1200, -0.082, 0.011)]
)
def test_random_baseline_matches_spec_sanity_values(filters, dim, expected, sd):
    mu = random_mu(filters, dim, seed=0)
    assert mu.mean().item() == pytest.approx(expected, abs=0.02)
    assert mu.std().item() == pytest.approx(sd, abs=0.008)
    assert torch.equal(mu, random_mu(filters, dim, seed=0))  # seeded
    assert not torch.equal(mu, random_mu(filters, dim, seed=1))


def test_layer_pairings_on_paper_net_uses_paper_layers_and_doubled_inputs():
    cfg = OmegaConf.structured(ModelConfig)
    cfg.family, cfg.activation_layers, cfg.width_mult = "convpool_c", {"crelu": [1, 2]}, 0.25
    model = build_model(cfg, 10)
    lps = layer_pairings(model, [1, 2, 3], seed=0)
    assert [lp.name for lp in lps] == ["conv1", "conv2", "conv3"]
    assert [lp.dim for lp in lps] == [27, 2 * 24 * 9, 2 * 24 * 9]  # conv2/3 inputs are 2F CReLU channels
    assert all(lp.mu_w.shape == lp.mu_r.shape == (24,) for lp in lps)
    with pytest.raises(ValueError, match="conv12 does not exist"):
        layer_pairings(model, [12])


def test_alexnet_from_local_weights_file(tmp_path):
    from torchvision.models import alexnet

    torch.manual_seed(0)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in alexnet(weights=None).state_dict().items()}
    # random conv weights, zero classifier (cheap), saved DataParallel-style under "state_dict"
    sd = {k: torch.randn(s) if k.startswith("features") else torch.zeros(s) for k, s in shapes.items()}
    path = tmp_path / "alexnet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    loaded = load_alexnet(path)
    assert torch.equal(loaded.features[0].weight, sd["features.0.weight"])
    names = [n for n, _ in conv_layers(loaded)]
    assert names == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    lps = layer_pairings(loaded, [1, 2])
    assert (lps[0].num_filters, lps[0].dim) == (64, 363)
    assert (lps[1].num_filters, lps[1].dim) == (192, 64 * 25)
