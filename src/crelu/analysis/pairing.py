"""Pairing filters and µ (Figs 1-3 of the paper; docs/analysis.md).

For a conv layer with filters W ∈ R^{F×C×k×k}, every filter is flattened to φ_i ∈ R^{C·k·k} and scaled to unit
ℓ2 norm.  Its *pairing filter* is φ̄_i = argmin_{j≠i} <φ_i, φ_j> and µ_i = <φ_i, φ̄_i> is the most negative
cosine [PAPER].  The random baseline µ^r draws F i.i.d. N(0, 1) vectors of the same dimension, normalises them
and computes µ the same way [PAPER].

Works on any torch conv net: :func:`conv_layers` uses ``PaperNet.convs()`` when the model has it and otherwise
every ``nn.Conv2d`` in module order (e.g. torchvision's AlexNet, see :func:`load_alexnet`).  Grouped convs
(AlexNet's conv2/4/5 in the original) are pooled into one filter set per layer, as albanie/CReLU does
(INFERRED).  :func:`module_pairings` does the same for any network, naming layers by module path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LayerPairing:
    """µ of one conv layer: ``mu_w`` (trained filters) and ``mu_r`` (random baseline), both of shape (F,)."""

    name: str
    num_filters: int
    dim: int
    mu_w: torch.Tensor
    mu_r: torch.Tensor
    partner: torch.Tensor  # index of each filter's pairing filter

    def summary(self) -> dict[str, float | int | str]:
        return {
            "layer": self.name,
            "filters": self.num_filters,
            "dim": self.dim,
            "mu_w_mean": float(self.mu_w.mean()),
            "mu_w_std": float(self.mu_w.std(unbiased=False)),
            "mu_r_mean": float(self.mu_r.mean()),
            "mu_r_std": float(self.mu_r.std(unbiased=False)),
        }


def unit_filters(weight: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Flatten a filter bank (F, ...) to (F, D) in float64 and scale every row to unit ℓ2 norm.

    An all-zero filter stays zero (its cosines are 0) instead of producing NaNs.
    """
    phi = weight.detach().reshape(weight.shape[0], -1).to(torch.float64)
    return phi / phi.norm(dim=1, keepdim=True).clamp_min(eps)


def pairing(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mu, partner)`` for a filter bank: mu_i = min_{j≠i} cos(φ_i, φ_j), partner_i = the argmin j."""
    if weight.shape[0] < 2:
        raise ValueError(f"pairing needs at least 2 filters, got {weight.shape[0]}")
    phi = unit_filters(weight)
    gram = phi @ phi.T
    gram.fill_diagonal_(float("inf"))  # exclude j = i (its cosine is 1 and would never win anyway)
    mu, partner = gram.min(dim=1)
    return mu, partner


def random_mu(num_filters: int, dim: int, seed: int = 0) -> torch.Tensor:
    """µ^r: µ of ``num_filters`` unit-normalised i.i.d. Gaussian vectors of dimension ``dim`` (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    return pairing(torch.randn(num_filters, dim, generator=gen, dtype=torch.float64))[0]


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The conv layers of ``model`` in order, named ``conv1``, ``conv2``, ...

    A :class:`~crelu.models.base.PaperNet` gives its paper layers (``model.convs()``); any other net gives
    every ``nn.Conv2d`` in registration order (torchvision AlexNet: its five convs).
    """
    convs = getattr(model, "convs", None)
    if callable(convs):
        return list(convs().items())
    mods = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not mods:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layers")
    return [(f"conv{i}", m) for i, m in enumerate(mods, 1)]


def layer_pairings(
    model: nn.Module, layers: Sequence[int] | None = None, seed: int = 0
) -> list[LayerPairing]:
    """µ^w and µ^r of the selected conv layers (1-based indices; default all).

    The random baseline of layer number ``i`` is seeded with ``seed + i`` so it is reproducible per layer.
    """
    convs = conv_layers(model)
    return [lp for _, lp in _pair_layers(convs, layers, seed, "conv{i} does not exist: the model has {n} conv layers")]


def _pair_layers(convs: list, layers: Sequence[int] | None, seed: int, missing: str
                 ) -> list[tuple[nn.Conv2d, LayerPairing]]:
    """µ^w and µ^r of ``convs[i - 1]`` for each 1-based ``i`` in ``layers`` (default all); baseline seeded ``seed + i``.
    """
    out = []
    for i in range(1, len(convs) + 1) if layers is None else layers:
        if not 1 <= i <= len(convs):
            raise ValueError(missing.format(i=i, n=len(convs)))
        name, conv = convs[i - 1]
        w = conv.weight
        mu_w, partner = pairing(w)
        dim = w[0].numel()
        out.append((conv, LayerPairing(name, w.shape[0], dim, mu_w, random_mu(w.shape[0], dim, seed + i), partner)))
    return out


def module_pairings(
    model: nn.Module, layers: Sequence[int] | None = None, seed: int = 0
) -> list[tuple[nn.Conv2d, LayerPairing]]:
    """µ^w and µ^r of every ``nn.Conv2d`` with at least 2 filters, named by its module path (``layer1.0.conv1``).

    ``layers`` picks 1-based positions in that list (default all).  The random baseline of position ``i`` is
    seeded with ``seed + i``.  Grouped and depthwise convs are one filter set each (their filters have
    ``C / groups · k · k`` weights).
    """
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.out_channels >= 2]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer with 2 or more filters")
    return _pair_layers(convs, layers, seed, "conv layer {i} does not exist: the model has {n}")


def load_alexnet(path: str | os.PathLike) -> nn.Module:
    """torchvision AlexNet with weights from a **local** file (never downloads).

    Accepts a plain ``state_dict`` or a dict holding one under ``state_dict`` / ``model``, read with
    ``torch.load(weights_only=True)`` (a file holding a pickled module is refused: unpickling it could run
    code; see :mod:`crelu.analysis.torchvision_models`).  torchvision's AlexNet has 64/192/384/256/256 filters and
    no groups; any pretrained AlexNet serves Fig. 2 (the paper does not say which one it used).
    """
    from crelu.analysis.torchvision_models import load_torchvision_file

    return load_torchvision_file("alexnet", path)
