"""Layer read-outs of a :class:`~crelu.models.base.PaperNet`: where "the output of conv i" is taken.

``model.features`` is an ``nn.Sequential`` whose children are named ``conv{i}``, ``bn{i}``, ``act{i}``,
``pool{j}``, ``drop...``.  The read-out of conv layer ``i`` is the output of ``act{i}`` (post-activation, so a
CReLU layer gives 2F channels).  With ``after_pool=True`` a layer that is followed by a max-pool before the
next conv (ConvPool-CNN-C conv3 and conv6) is read after that pool instead (INFERRED from the jumps at conv3
and conv6 in the paper's Fig. 4; docs/analysis.md).  A post-activation BatchNorm (VGG
``bn_position=post_act``) is part of the layer, so its output is used when it follows ``act{i}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def readout_points(model: nn.Module, layers: Sequence[int], after_pool: bool = False) -> dict[str, int]:
    """Map the name of the ``features`` child whose output is read to the conv index it stands for."""
    names = [n for n, _ in model.features.named_children()]
    points: dict[str, int] = {}
    for i in layers:
        act = f"act{i}"
        if act not in names:
            raise ValueError(f"the model has no {act} (conv layers: {len(model.plan)})")
        pos = names.index(act)
        # Walk past modules that belong to this layer (post-act BN, dropout) and, if asked, a following pool.
        j = pos
        for k in range(pos + 1, len(names)):
            n = names[k]
            if n.startswith("conv"):
                break
            if n == f"bn{i}" or (after_pool and n.startswith("pool")):
                j = k
        points[names[j]] = i
    return points


@torch.no_grad()
def layer_outputs(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[int],
    after_pool: bool = False,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[int, torch.Tensor]:
    """Run ``model.features`` on ``x`` and return ``{conv index: read-out}``; stops after the deepest layer.

    ``reduce`` (e.g. :func:`centre`) is applied to each read-out as soon as it is computed, so only the
    reduced tensors are kept.
    """
    points = readout_points(model, layers, after_pool)
    out: dict[int, torch.Tensor] = {}
    h = x
    for name, mod in model.features.named_children():
        h = mod(h)
        if name in points:
            out[points[name]] = reduce(h) if reduce is not None else h
            if len(out) == len(points):
                break
    return out


def centre(h: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C): each channel at the centre spatial position (an invariance-score "unit")."""
    return h[:, :, h.shape[2] // 2, h.shape[3] // 2]


def centre_response_fn(
    model: nn.Module, layers: Sequence[int], after_pool: bool = False
) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """A ``x -> {"conv{i}": (N, units)}`` function for :func:`crelu.analysis.invariance.invariance_scores`."""
    model.eval()
    device = next(model.parameters()).device

    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = layer_outputs(model, x.to(device), layers, after_pool, reduce=centre)
        return {f"conv{i}": v.float().cpu() for i, v in outs.items()}

    return fn
