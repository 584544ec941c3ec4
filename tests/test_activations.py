import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from crelu.config.schema import ModelConfig
from crelu.models import ModelConfigError, build_model
from crelu.nn import ACTIVATIONS, AVR, CReLU, make_activation, register_activation


def test_crelu_concatenates_positive_then_negative_phase():
    x = torch.tensor([[[[1.5]], [[-2.0]], [[0.0]]]])  # N=1, C=3, 1x1
    y = CReLU()(x)
    assert y.shape == (1, 6, 1, 1)
    assert y.flatten().tolist() == [1.5, 0.0, 0.0, 0.0, 2.0, 0.0]


def test_crelu_keeps_all_information_and_avr_drops_phase():
    x = torch.randn(4, 5, 3, 3)
    y = CReLU()(x)
    torch.testing.assert_close(y[:, :5] - y[:, 5:], x)  # x = relu(x) - relu(-x)
    torch.testing.assert_close(AVR()(x), y[:, :5] + y[:, 5:])
    torch.testing.assert_close(AVR()(x), AVR()(-x))


def test_crelu_gradient_matches_numerical_and_is_sign_selective():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(CReLU(), (x,))
    y = CReLU()(x)
    w = torch.zeros_like(y)
    w[:, :3] = 1.0  # upstream gradient only on the positive phase
    (g,) = torch.autograd.grad((y * w).sum(), x)
    torch.testing.assert_close(g, (x > 0).double())


def test_avr_gradient_is_sign():
    x = torch.tensor([-2.0, -0.5, 0.5, 3.0], requires_grad=True)
    AVR()(x).sum().backward()
    assert x.grad.tolist() == [-1.0, -1.0, 1.0, 1.0]


def test_registry_knows_the_papers_activations():
    assert {"relu", "crelu", "avr"} <= set(ACTIVATIONS)
    assert ACTIVATIONS["crelu"].channel_factor == 2 and ACTIVATIONS["avr"].channel_factor == 1
    with pytest.raises(ValueError, match="unknown activation"):
        make_activation("crelux")


def test_new_activation_is_one_class_and_one_config_line():
    name = "test_softsign_pair"
    if name not in ACTIVATIONS:

        @register_activation(name, channel_factor=2)
        class SoftsignPair(nn.Module):
            def forward(self, x):
                return torch.cat([nn.functional.softsign(x), nn.functional.softsign(-x)], 1)

    cfg = OmegaConf.structured(ModelConfig)
    cfg.activation_layers = {name: [1, 2]}
    net = build_model(cfg, 10)
    assert net.plan[0].out_channels == 192 and net.plan[2].in_channels == 192
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    cfg.activation_layers = {"nonexistent": [1]}
    with pytest.raises(ModelConfigError, match="unknown activation 'nonexistent'"):
        build_model(cfg, 10)
