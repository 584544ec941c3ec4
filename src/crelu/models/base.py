"""Common machinery of the paper's networks: build a named ``nn.Sequential`` from a resolved plan.

Every network is a :class:`PaperNet`: ``features`` (a Sequential whose children are named ``conv{i}``,
``bn{i}``, ``act{i}``, ``pool{j}``, ``drop...``) followed by ``head``.  Analysis code finds layers by these
names (``model.conv(3)``, ``model.features.act3``) and reads the resolved ``model.plan``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from crelu.models.plan import LayerPlan, format_plan
from crelu.nn import activation_fan_in_gain, make_activation


class PaperNet(nn.Module):
    """A conv net of the paper: ``head(features(x))`` with a resolved per-layer ``plan``."""

    def __init__(self, family: str, plan: list[LayerPlan], features: nn.Sequential, head: nn.Module,
                 num_classes: int) -> None:
        super().__init__()
        self.family = family
        self.plan = plan
        self.num_classes = num_classes
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def conv(self, index: int) -> nn.Conv2d:
        """The paper's conv layer ``index`` (1-based)."""
        return getattr(self.features, f"conv{index}")

    def convs(self) -> OrderedDict[str, nn.Conv2d]:
        """All conv layers in order, keyed ``conv1``, ``conv2``, ..."""
        return OrderedDict((p.name, self.conv(p.index)) for p in self.plan)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def describe(self) -> str:
        return f"{self.family} ({self.num_parameters():,} parameters)\n{format_plan(self.plan)}"


class GlobalAvgPool(nn.Module):
    """Average over the spatial axes: (N, C, H, W) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def conv_block(p: LayerPlan, *, batchnorm: bool = False, bn_eps: float = 1e-5,
               bn_position: str = "pre_act") -> list[tuple[str, nn.Module]]:
    """``conv{i}`` [+ ``bn{i}``] + ``act{i}`` for one planned layer.

    ``bn_position='pre_act'`` normalises the linear responses (conv -> BN(F) -> act), ``'post_act'`` normalises
    the activation output (conv -> act -> BN(C_out)).
    """
    mods: list[tuple[str, nn.Module]] = [
        (p.name, nn.Conv2d(p.in_channels, p.filters, p.kernel, stride=p.stride, padding=p.padding, bias=True))
    ]
    act = (f"act{p.index}", make_activation(p.activation))
    if not batchnorm:
        return [*mods, act]
    if bn_position == "pre_act":
        return [*mods, (f"bn{p.index}", nn.BatchNorm2d(p.filters, eps=bn_eps)), act]
    if bn_position == "post_act":
        return [*mods, act, (f"bn{p.index}", nn.BatchNorm2d(p.out_channels, eps=bn_eps))]
    raise ValueError(f"bn_position must be 'pre_act' or 'post_act', got {bn_position!r}")


def init_convs_(net: PaperNet, scheme: str, scale: float = 1.0) -> None:
    """Initialise every planned conv of ``net``; the He gain follows the activation that feeds each layer.

    ``scale`` multiplies the variance (neither the paper nor Springenberg et al. give the init: INFERRED).

    * ConvPool-CNN-C uses 0.5: without BatchNorm its two max-pools pick maxima and grow the activations, so
      under plain He the RMS doubles across the pools and the initial loss of the CReLU row is 4.6 instead of
      ln 10 (``scripts/init_probe.py experiment=table1/crelu``, docs/evidence/init_convpool_crelu.md); in
      training it reached NaN within 30 steps at lr 0.01 and 0.05 on the real CIFAR-10 subset, while half the
      He variance starts near ln 10 and trains.
    * All-CNN-B uses plain He (1.0): it has no max-pools, and He keeps the RMS near 1.4 through all twelve
      convs at 227 px, while half-He shrinks it 66x by conv12 and conv1's gradient 46x
      (``scripts/init_probe.py experiment=table4/baseline dataset=imagenet --size 227``,
      docs/evidence/init_allcnn_b.md).
    * VGG (with BatchNorm) uses cifar.torch's MSR fan-out init at 1.0.
    """
    if scale <= 0:
        raise ValueError(f"model.init_scale must be > 0, got {scale}")
    prev = None
    for p in net.plan:
        gain = 2.0 if prev is None else activation_fan_in_gain(prev)
        init_conv_(net.conv(p.index), scheme, gain=gain * scale)
        prev = p.activation


def init_conv_(conv: nn.Conv2d, scheme: str, gain: float = 2.0) -> None:
    """Initialise a conv layer in place; biases to zero.

    * ``he_normal``: N(0, sqrt(gain / fan_in)) (He et al. 2015, fan-in; INFERRED for ConvPool-CNN-C and
      All-CNN-B, docs/recipes.md).  ``gain`` is 2 after ReLU/CReLU and 1 after |x|
      (:func:`crelu.nn.activation_fan_in_gain`), so AVR stacks do not blow up at initialisation.
    * ``msr_fanout``: N(0, sqrt(2 / (k*k*F_out))), cifar.torch's "MSR" init (fan-out).
    * ``torch_default``: leave PyTorch's default.
    """
    if scheme == "torch_default":
        return
    k = conv.kernel_size[0] * conv.kernel_size[1]
    if scheme == "he_normal":
        std = math.sqrt(gain / (k * conv.in_channels // conv.groups))
    elif scheme == "msr_fanout":
        std = math.sqrt(gain / (k * conv.out_channels))
    else:
        raise ValueError(f"unknown init {scheme!r}; use he_normal, msr_fanout or torch_default")
    nn.init.normal_(conv.weight, 0.0, std)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
