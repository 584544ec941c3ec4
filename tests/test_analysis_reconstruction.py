"""Reconstruction through conv + CReLU by min-norm least squares (Prop 2.1; docs/analysis.md)."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from crelu.analysis.reconstruction import (
    ReconstructionError,
    conv_adjoint,
    conv_forward,
    conv_lstsq,
    invert_module,
    reconstruct,
    relative_error,
)
from crelu.config.schema import ModelConfig
from crelu.models import build_model
from crelu.nn.activations import CReLU, ReLU


def random_conv(cin=3, cout=8, k=3, stride=2, padding=1, seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, k, stride=stride, padding=padding).double().requires_grad_(False)


@pytest.mark.parametrize(("stride", "padding", "size"), [(1, 1, 10), (2, 1, 16), (2, 0, 15)])
def test_adjoint_is_the_transpose(stride, padding, size):
    conv = random_conv(stride=stride, padding=padding)
    a = torch.randn(2, 3, size, size, dtype=torch.float64)
    y = conv_forward(conv, a)
    b = torch.randn_like(y)
    assert (y * b).sum().item() == pytest.approx((a * conv_adjoint(conv, b, (size, size))).sum().item())


def _in_range_input(conv, size=16):
    """x = Aᵀu lies in range(W) of Prop 2.1 (the row space of the strided conv)."""
    out = conv_forward(conv, torch.zeros(1, 3, size, size, dtype=torch.float64)).shape
    return conv_adjoint(conv, torch.randn(2, *out[1:], dtype=torch.float64), (size, size))


def test_input_in_range_is_recovered_through_crelu_but_not_relu():
    conv = random_conv()  # 3 -> 8 filters, stride 2: underdetermined, so only range(W) is recoverable
    x = _in_range_input(conv)
    f = CReLU()(conv(x))
    x_hat, info = conv_lstsq(conv, invert_module(CReLU(), f) - conv.bias.view(1, -1, 1, 1), (16, 16))
    assert relative_error(x_hat, x).max() < 1e-3
    assert info.rel_residual < 1e-6
    g = ReLU()(conv(x))
    x_relu, _ = conv_lstsq(conv, invert_module(ReLU(), g) - conv.bias.view(1, -1, 1, 1), (16, 16), iters=100)
    assert relative_error(x_relu, x).min() > 0.3


def test_min_norm_solution_is_the_projection_onto_the_range():
    conv = random_conv()
    x0 = _in_range_input(conv)
    noise = torch.randn_like(x0)
    # remove noise's component in range(W) so it lies in ker(conv): conv(x0 + n) == conv(x0)
    proj, _ = conv_lstsq(conv, conv_forward(conv, noise), (16, 16))
    n = noise - proj
    assert conv_forward(conv, n).abs().max() < 1e-8
    x_hat, _ = conv_lstsq(conv, conv_forward(conv, x0 + n), (16, 16))
    assert relative_error(x_hat, x0).max() < 1e-6


def test_paper_net_reconstructs_exactly_from_conv1_and_worse_with_relu():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    errs = {}
    for act in ("crelu", "relu"):
        cfg = OmegaConf.structured(ModelConfig)
        cfg.activation_layers, cfg.width_mult = {act: [1, 2, 3]}, 0.125  # 12 filters: injective on 3 channels
        model = build_model(cfg, 10).eval()
        x_hat, infos = reconstruct(model, x, 1)
        errs[act] = relative_error(x_hat, x).max().item()
        assert len(infos) == 1
    assert errs["crelu"] < 1e-3 and errs["relu"] > 0.2


def test_multi_layer_goes_top_down_and_inverts_batchnorm():
    cfg = OmegaConf.structured(ModelConfig)
    cfg.family, cfg.activation_layers, cfg.width_mult = "vgg", {"crelu": [1, 2]}, 0.25
    model = build_model(cfg, 10)
    with torch.no_grad():
        for bn in (model.features.bn1, model.features.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(1, 3, 6, 6)
    x_hat, infos = reconstruct(model, x, 2)
    assert len(infos) == 2 and x_hat.shape == x.shape
    # conv2 maps 2F = 16 channels to F = 8 (underdetermined), so the error is the projection loss, not noise
    assert relative_error(reconstruct(model, x, 1)[0], x).item() < 1e-3
    assert relative_error(x_hat, x).item() < 1.0


def test_pool_between_readout_and_pixels_is_refused():
    cfg = OmegaConf.structured(ModelConfig)
    cfg.activation_layers, cfg.width_mult = {"crelu": [1, 2, 3, 4]}, 0.125
    model = build_model(cfg, 10).eval()
    with pytest.raises(ReconstructionError, match="pool"):
        reconstruct(model, torch.randn(1, 3, 8, 8), 4)
