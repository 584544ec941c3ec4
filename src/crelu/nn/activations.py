"""Activation functions of the paper and a tiny registry.

* ``relu``  : max(x, 0).
* ``crelu`` : Concatenated ReLU, Definition 2.1 of Shang et al. (2016):
  ``cat([relu(x), relu(-x)], dim=1)``.  The concatenation axis is the channel axis, so a conv layer with F
  filters followed by CReLU emits 2F channels.  Channel order (positive phase first, channel ``F+i`` is the
  negative phase of filter ``i``) is INFERRED (docs/recipes.md): it is the convention of every implementation
  seen and Table 6 needs a fixed order.
* ``avr``   : absolute value rectification |x| (Jarrett et al. 2009), channel count unchanged.

Adding an activation is one class decorated with :func:`register_activation`; a config then names it
(``model.activation=elu`` for every hidden conv, or ``model.activation_layers={elu: [1, 2]}`` for some), e.g.::

    @register_activation("elu")
    class ELU(nn.ELU): ...

The registry also says how the activation acts on channels, which is all that packed training
(:mod:`crelu.models.packed`) needs: an element-wise activation (``channel_factor=1``, the default) is applied to
K stacked members as it is; a channel-multiplying one (CReLU) is applied to each member's channel block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ActivationInfo:
    name: str
    cls: type[nn.Module]
    channel_factor: int  # output channels = channel_factor * input channels
    fan_in_gain: float  # E[x^2] of the output = Var(pre-activation) / fan_in_gain (He init uses it)
    elementwise: bool  # output[i] depends on input[i] only (applies unchanged to K channel-stacked members)


ACTIVATIONS: dict[str, ActivationInfo] = {}


def register_activation(name: str, channel_factor: int = 1, fan_in_gain: float = 2.0,
                        elementwise: bool | None = None) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register ``cls`` under ``name``.

    ``channel_factor`` is its channel multiplier (CReLU: 2).  ``fan_in_gain`` is the He-init gain of a layer
    that *consumes* this activation: Var(w) = gain / fan_in keeps the pre-activation variance constant.  ReLU
    keeps half the energy of a symmetric input (gain 2); so does each CReLU channel (gain 2 over the doubled
    fan-in); |x| keeps all of it (gain 1).  ``elementwise`` defaults to ``channel_factor == 1``; pass
    ``elementwise=False`` for a channel-preserving activation that mixes channels (e.g. a channel softmax).
    """
    if channel_factor < 1:
        raise ValueError(f"channel_factor must be >= 1, got {channel_factor}")
    if elementwise is None:
        elementwise = channel_factor == 1
    if elementwise and channel_factor != 1:
        raise ValueError(f"an element-wise activation keeps the channel count; got channel_factor={channel_factor}")

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in ACTIVATIONS and ACTIVATIONS[name].cls is not cls:
            raise ValueError(f"activation {name!r} is already registered to {ACTIVATIONS[name].cls.__name__}")
        ACTIVATIONS[name] = ActivationInfo(name, cls, channel_factor, fan_in_gain, elementwise)
        cls.activation_name = name  # type: ignore[attr-defined]
        cls.channel_factor = channel_factor  # type: ignore[attr-defined]
        return cls

    return deco


def _lookup(name: str) -> ActivationInfo:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; registered: {sorted(ACTIVATIONS)}") from None


def activation_info(module_or_name: nn.Module | str) -> ActivationInfo | None:
    """The registry entry of an activation module (or name); ``None`` for a module that is not registered."""
    if isinstance(module_or_name, str):
        return _lookup(module_or_name)
    name = getattr(type(module_or_name), "activation_name", None)
    info = ACTIVATIONS.get(name) if name else None
    return info if info is not None and info.cls is type(module_or_name) else None


def make_activation(name: str) -> nn.Module:
    """Instantiate the registered activation ``name``."""
    return _lookup(name).cls()


def activation_fan_in_gain(name: str) -> float:
    """He-init gain for a layer fed by this activation (see :func:`register_activation`)."""
    return _lookup(name).fan_in_gain


def activation_channel_factor(name: str) -> int:
    """How many output channels the activation emits per input channel (CReLU: 2)."""
    return _lookup(name).channel_factor


@register_activation("relu")
class ReLU(nn.Module):
    """Rectified linear unit, max(x, 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


@register_activation("crelu", channel_factor=2)
class CReLU(nn.Module):
    """Concatenated ReLU: ``cat([relu(x), relu(-x)], dim)`` (positive phase first; order INFERRED, docs/recipes.md).

    Works for any tensor with a channel axis ``dim`` (default 1, NCHW or NC).  Has no parameters.
    """

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(torch.cat((x, -x), dim=self.dim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


@register_activation("identity", fan_in_gain=1.0)
class Identity(nn.Module):
    """No non-linearity (e.g. ``model.classifier_activation=identity`` for plain logits)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@register_activation("avr", fan_in_gain=1.0)
class AVR(nn.Module):
    """Absolute value rectification |x| = relu(x) + relu(-x) (Jarrett et al. 2009)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)
