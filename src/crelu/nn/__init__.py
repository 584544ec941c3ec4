"""Activations used by the paper and the registry that configs refer to by name."""

from crelu.nn.activations import (
    ACTIVATIONS,
    AVR,
    CReLU,
    ReLU,
    activation_channel_factor,
    activation_fan_in_gain,
    make_activation,
    register_activation,
)

__all__ = [
    "ACTIVATIONS",
    "AVR",
    "CReLU",
    "ReLU",
    "activation_channel_factor",
    "activation_fan_in_gain",
    "make_activation",
    "register_activation",
]
