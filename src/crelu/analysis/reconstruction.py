"""Reconstruction from CReLU features (Prop 2.1, Fig. 5; docs/analysis.md).

Prop 2.1 [PAPER]: x₀, the part of x in range(W), can be recovered from CReLU(Wᵀx).  The exact Algorithm 1 is
in the unavailable supplement, so the concrete form here is INFERRED from the proof, uses no learning,
and:

1. undoes CReLU: z = f[:F] - f[F:] - b (the pre-activation, conv bias b removed);
2. solves the minimum-norm least-squares problem x̂ = argmin ‖A x - z‖² with A the (strided) convolution, by
   conjugate gradient on the normal equations AᵀA x = Aᵀz, using only ``conv2d`` (A) and ``conv_transpose2d``
   (Aᵀ, its adjoint), starting at x = 0 (iterates stay in range(Aᵀ), so CG converges to the min-norm
   solution);
3. goes top-down through several layers: the estimate of conv k's input is layer k-1's CReLU output, so step 1
   is applied again (the halves need not have disjoint supports any more) and so on down to pixels.

Other modules between a conv and its read-out are inverted where that is exact (eval-mode BatchNorm, dropout).
ReLU and AVR are "inverted" as the identity, which loses the negative part / the sign (INFERRED, used to show
how much worse ReLU features reconstruct).  Max-pooling is not invertible here: the Section C analysis is out
of scope, so a pool between the read-out and pixels raises :class:`ReconstructionError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from crelu.analysis.features import readout_points
from crelu.nn.activations import AVR, CReLU, ReLU


class ReconstructionError(ValueError):
    """The layers between the read-out and the pixels cannot be inverted by this procedure."""


@dataclass
class CGInfo:
    iterations: int
    rel_residual: float  # max over the batch of ‖Aᵀ(Ax - z)‖ / ‖Aᵀz‖


def _conv_args(conv: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], int]:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ReconstructionError(f"only zero-padded convs with explicit padding are supported, got {conv}")
    return tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups


def conv_forward(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A x: the conv's linear part (no bias), in ``x``'s dtype."""
    stride, padding, dilation, groups = _conv_args(conv)
    return F.conv2d(x, conv.weight.to(x.dtype), None, stride, padding, dilation, groups)


def conv_adjoint(conv: nn.Conv2d, y: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    """Aᵀ y: the transposed convolution, with the output padding that restores the conv's input size."""
    stride, padding, dilation, groups = _conv_args(conv)
    k = conv.kernel_size
    out_pad = []
    for d in range(2):
        base = (y.shape[2 + d] - 1) * stride[d] - 2 * padding[d] + dilation[d] * (k[d] - 1) + 1
        out_pad.append(input_hw[d] - base)
    return F.conv_transpose2d(
        y, conv.weight.to(y.dtype), None, stride, padding, tuple(out_pad), groups, dilation
    )


def _bdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1).view(-1, 1, 1, 1)


@torch.no_grad()
def conv_lstsq(
    conv: nn.Conv2d, z: torch.Tensor, input_hw: tuple[int, int], iters: int = 300, rtol: float = 1e-12
) -> tuple[torch.Tensor, CGInfo]:
    """Minimum-norm x̂ = argmin ‖conv(x) - z‖² per sample, by CG on the normal equations from x = 0.

    Works in ``z``'s dtype (use float64 for tight solves); stops when every sample's normal-equation residual
    is below ``rtol`` relative to ‖Aᵀz‖, or after ``iters`` iterations.
    """
    b = conv_adjoint(conv, z, input_hw)
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = _bdot(r, r)
    bnorm2 = rs.clone().clamp_min(torch.finfo(b.dtype).tiny)
    it = 0
    while it < iters:
        it += 1
        ap = conv_adjoint(conv, conv_forward(conv, p), input_hw)
        pap = _bdot(p, ap)
        alpha = torch.where(pap > 0, rs / pap.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rs))
        x += alpha * p
        r -= alpha * ap
        rs_new = _bdot(r, r)
        if bool((rs_new / bnorm2).max() <= rtol**2):
            rs = rs_new
            break
        p = r + (rs_new / rs.clamp_min(torch.finfo(b.dtype).tiny)) * p
        rs = rs_new
    return x, CGInfo(it, float((rs / bnorm2).max().sqrt()))


def invert_module(mod: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Undo one module that sits between a conv and the next conv (see the module docstring)."""
    if isinstance(mod, (nn.Dropout, nn.Identity)):
        return y
    if isinstance(mod, CReLU):
        if mod.dim != 1:
            raise ReconstructionError("only channel-axis CReLU (dim=1) can be undone")
        f = y.shape[1] // 2
        return y[:, :f] - y[:, f:]
    if isinstance(mod, (ReLU, nn.ReLU, AVR)):
        return y  # lossy: negative part / sign is gone
    if isinstance(mod, nn.BatchNorm2d):
        if mod.training or mod.running_mean is None:
            raise ReconstructionError("BatchNorm can only be undone in eval mode with running statistics")
        shape = (1, -1, 1, 1)
        scale = torch.sqrt(mod.running_var.to(y.dtype) + mod.eps).view(shape)
        if mod.affine:
            y = (y - mod.bias.to(y.dtype).view(shape)) / mod.weight.to(y.dtype).view(shape)
        return y * scale + mod.running_mean.to(y.dtype).view(shape)
    if isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
        raise ReconstructionError(
            "cannot reconstruct through a pooling layer (the max-pool analysis, Section C, is out of scope; "
            "docs/analysis.md): pick a read-out layer below the first pool"
        )
    raise ReconstructionError(f"do not know how to invert {type(mod).__name__}")


def _stages(model: nn.Module, layer: int) -> list[tuple[nn.Conv2d, list[nn.Module]]]:
    """For conv1..conv{layer}: (conv, modules after it up to the next conv / the read-out of ``layer``)."""
    stop = next(iter(readout_points(model, [layer])))
    stages: list[tuple[nn.Conv2d, list[nn.Module]]] = []
    for name, mod in model.features.named_children():
        if name.startswith("conv"):
            stages.append((mod, []))
        elif stages:
            stages[-1][1].append(mod)
        elif not isinstance(mod, (nn.Dropout, nn.Identity)):
            raise ReconstructionError(f"{name} before conv1 cannot be inverted")
        if name == stop:
            break
    return stages


@torch.no_grad()
def reconstruct(
    model: nn.Module,
    x: torch.Tensor,
    layer: int,
    iters: int = 300,
    rtol: float = 1e-12,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, list[CGInfo]]:
    """Reconstruct the (normalised) input ``x`` from the read-out of conv ``layer`` of a PaperNet, top-down.

    Returns ``(x_hat, cg_infos)`` with x_hat of x's shape in ``dtype`` and one :class:`CGInfo` per solved conv
    (top layer first).
    """
    model.eval()
    stages = _stages(model, layer)
    shapes, h = [], x
    for conv, post in stages:
        shapes.append(tuple(h.shape[2:]))
        h = conv(h)
        for m in post:
            h = m(h)
    y = h.to(dtype)
    infos = []
    for (conv, post), hw in zip(reversed(stages), reversed(shapes)):
        for m in reversed(post):
            y = invert_module(m, y)
        if conv.bias is not None:
            y = y - conv.bias.to(dtype).view(1, -1, 1, 1)
        y, info = conv_lstsq(conv, y, hw, iters, rtol)
        infos.append(info)
    return y, infos


def relative_error(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖x̂ - x‖ / ‖x‖."""
    x = x.to(x_hat.dtype)
    return (x_hat - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-30)
