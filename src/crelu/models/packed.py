"""K paper networks of one architecture trained as ONE stacked network (``protocol.pack``).

:class:`PackedNet` holds K :class:`~crelu.models.base.PaperNet` members side by side along the channel axis,
member-major: channels ``[k*C, (k+1)*C)`` of every activation belong to member ``k``.  Each layer keeps the
member's computation exact:

* ``Conv2d(C_in, F)`` -> ``Conv2d(K*C_in, K*F, groups=K)``: group ``k`` sees only member ``k``'s channels;
* ``BatchNorm(C)`` -> ``BatchNorm(K*C)``: batch statistics are per channel, so this *is* per-member BN (training
  statistics and running statistics alike);
* CReLU -> :class:`PackedCReLU`: ``cat([relu(z_k), relu(-z_k)])`` inside each member's block, so member ``k``'s
  2F channels keep the single-model order (positive phases, then negative phases);
* ``Linear(I, O)`` -> :class:`PackedLinear`: one batched matmul over the K members;
* any other registered activation that multiplies channels -> :class:`PerMember` (applied block by block);
* every activation the registry marks element-wise (ReLU, |x|, identity, and any new one), dropout, max/avg
  pooling, global average pooling and flatten are element- or channel-wise, so the same module works on the
  stacked tensor (dropout masks are drawn independently for each
  element, hence independently per member).

The input is the K members' batches stacked along channels, ``(B, K*3, H, W)``; the output is ``(B, K, classes)``.
Module names are those of the members, so the packed ``state_dict`` has the members' keys, each tensor being the
concatenation of the K members' tensors along dim 0 (``num_batches_tracked`` is shared: see
:meth:`PackedNet.note_skipped_bn_step`).  :meth:`PackedNet.unpack` gives back K ordinary PaperNets.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crelu.models.base import GlobalAvgPool, PaperNet
from crelu.nn.activations import CReLU, activation_info

# Modules that act on each element or each channel on its own: they work unchanged on the stacked tensor.
_CHANNELWISE = (nn.ReLU, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, GlobalAvgPool)  # besides the registry's
_BN_COUNTER = "num_batches_tracked"


class PackedCReLU(nn.Module):
    """CReLU of K stacked members: each member's F channels become its own ``[relu(z), relu(-z)]`` block."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            z = x.permute(0, 2, 3, 1).unflatten(3, (self.k, -1))  # (B, H, W, K, F), a view of channels_last
            y = F.relu(torch.cat((z, -z), dim=4)).flatten(3, 4)  # (B, H, W, K*2F), contiguous
            return y.permute(0, 3, 1, 2)  # (B, K*2F, H, W), channels_last like the input
        z = x.unflatten(1, (self.k, -1))  # (B, K, F, ...)
        return F.relu(torch.cat((z, -z), dim=2)).flatten(1, 2)

    def extra_repr(self) -> str:
        return f"k={self.k}"


class PerMember(nn.Module):
    """Apply a per-sample module to each member's channel block: ``(B, K*C, ...) -> (B, K*C', ...)``.

    The K blocks are folded into the batch axis, so any module that maps one sample's channels to new
    channels (a channel-doubling activation, say) gives member ``k`` exactly what it gives the lone network.
    """

    def __init__(self, module: nn.Module, k: int) -> None:
        super().__init__()
        self.module, self.k = module, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, kc = x.shape[:2]
        y = self.module(x.reshape(b * self.k, kc // self.k, *x.shape[2:]))
        return y.reshape(b, self.k * y.shape[1], *y.shape[2:])


class PackedLinear(nn.Module):
    """K independent ``Linear(in_features, out_features)`` layers as one batched matmul.

    ``weight`` is ``(K*out, in)`` and ``bias`` ``(K*out,)``: member ``k``'s Linear weight is rows
    ``[k*out, (k+1)*out)``.  Input ``(B, K*in)``, output ``(B, K*out)``.
    """

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k * out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(k * out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        xs = x.reshape(b, self.k, self.in_features).transpose(0, 1)  # (K, B, in)
        w = self.weight.view(self.k, self.out_features, self.in_features).transpose(1, 2)  # (K, in, out)
        if self.bias is None:
            y = torch.bmm(xs, w)
        else:
            y = torch.baddbmm(self.bias.view(self.k, 1, self.out_features), xs, w)
        return y.transpose(0, 1).reshape(b, self.k * self.out_features)

    def extra_repr(self) -> str:
        return f"k={self.k}, in_features={self.in_features}, out_features={self.out_features}"


def pack_module(module: nn.Module, k: int) -> nn.Module:
    """The K-member version of one member's module (fresh parameters; :class:`PackedNet` copies them in)."""
    if isinstance(module, nn.Sequential):
        return nn.Sequential(OrderedDict((name, pack_module(child, k)) for name, child in module.named_children()))
    if isinstance(module, nn.Conv2d):
        m = module
        return nn.Conv2d(k * m.in_channels, k * m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                         dilation=m.dilation, groups=k * m.groups, bias=m.bias is not None,
                         padding_mode=m.padding_mode)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        m = module
        return type(m)(k * m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                       track_running_stats=m.track_running_stats)
    if isinstance(module, nn.Linear):
        return PackedLinear(k, module.in_features, module.out_features, bias=module.bias is not None)
    act = activation_info(module)
    if act is not None and act.elementwise:  # any registered element-wise activation
        return copy.deepcopy(module)
    if isinstance(module, CReLU):
        if module.dim != 1:
            raise TypeError(f"can only pack a CReLU over the channel axis (dim=1), got dim={module.dim}")
        return PackedCReLU(k)  # the fused form of PerMember(CReLU()) below
    if act is not None:  # any other registered activation: applied to each member's channel block
        return PerMember(copy.deepcopy(module), k)
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise TypeError("can only pack nn.Flatten(start_dim=1, end_dim=-1)")
        return nn.Flatten()  # (B, K*C, H, W) -> (B, K*C*H*W) keeps each member's block contiguous
    if type(module) in _CHANNELWISE:
        return copy.deepcopy(module)
    raise TypeError(f"cannot pack a {type(module).__name__}: no K-member version is known for it")


def _check_members(members: Sequence[PaperNet]) -> None:
    if len(members) < 1:
        raise ValueError("PackedNet needs at least one member network")
    ref = members[0]
    shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    for i, m in enumerate(members[1:], 1):
        if m.family != ref.family or m.plan != ref.plan or m.num_classes != ref.num_classes:
            raise ValueError(f"member {i} ({m.family}) has another architecture than member 0 ({ref.family})")
        if {k: tuple(v.shape) for k, v in m.state_dict().items()} != shapes or repr(m) != repr(ref):
            raise ValueError(f"member {i} has other layers or tensor shapes than member 0")


class PackedNet(nn.Module):
    """K PaperNets of one architecture as one network: ``(B, K*3, H, W) -> (B, K, classes)``."""

    def __init__(self, members: Sequence[PaperNet]) -> None:
        super().__init__()
        _check_members(members)
        ref = members[0]
        self.k = len(members)
        self.family, self.plan, self.num_classes = ref.family, ref.plan, ref.num_classes
        with torch.device("meta"):  # no init draws (the weights are copied in below), no global RNG consumed
            self.features = pack_module(ref.features, self.k)
            self.head = pack_module(ref.head, self.k)
        # A CPU copy of member 0 (a plain list, so not a submodule): the blueprint unpack() fills in.
        self._template = [copy.deepcopy(ref).cpu()]
        # num_batches_tracked is one shared counter per BN; members that sat out steps lag behind it.
        self._bn_lag: dict[str, list[int]] = {}
        first = next(ref.parameters())
        self.to_empty(device=first.device).to(dtype=first.dtype)
        self.load_members([m.state_dict() for m in members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x))
        return out.view(out.shape[0], self.k, -1)

    def load_members(self, states: Sequence[dict[str, torch.Tensor]]) -> None:
        """Copy K member state dicts (PaperNet keys) into the packed tensors."""
        if len(states) != self.k:
            raise ValueError(f"expected {self.k} member state dicts, got {len(states)}")
        packed, self._bn_lag = {}, {}
        for key in self.state_dict():
            ts = [s[key] for s in states]
            if key.endswith(_BN_COUNTER):
                top = max(int(t) for t in ts)
                self._bn_lag[key] = [top - int(t) for t in ts]
                packed[key] = torch.tensor(top, dtype=ts[0].dtype)
            else:
                packed[key] = torch.cat([t.detach() for t in ts], dim=0)
        self.load_state_dict(packed)

    def member_state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """The K members' state dicts (PaperNet keys; tensors are copies on the packed device)."""
        out: list[dict[str, torch.Tensor]] = [{} for _ in range(self.k)]
        for key, t in self.state_dict().items():
            for i in range(self.k):
                if key.endswith(_BN_COUNTER):
                    out[i][key] = t.detach() - self._bn_lag.get(key, [0] * self.k)[i]
                else:
                    out[i][key] = t.detach().chunk(self.k, dim=0)[i].clone()
        return out

    def note_skipped_bn_step(self, members: Sequence[int]) -> None:
        """Record that ``members`` sat out a training step (their BN counters must not advance)."""
        for key in self.state_dict():
            if key.endswith(_BN_COUNTER):
                lag = self._bn_lag.setdefault(key, [0] * self.k)
                for i in members:
                    lag[i] += 1

    def unpack(self) -> list[PaperNet]:
        """K independent PaperNets with the members' current weights and buffers (same device and mode)."""
        first = next(self.parameters())
        nets = []
        for state in self.member_state_dicts():
            net = copy.deepcopy(self._template[0]).to(first.device)
            net.load_state_dict(state)
            net.train(self.training)
            nets.append(net)
        return nets


def pack(members: Sequence[PaperNet]) -> PackedNet:
    """Stack K PaperNets of one architecture into a :class:`PackedNet` (weights copied)."""
    return PackedNet(members)


def stack_inputs(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """K member batches ``(B, C, H, W)`` -> the packed input ``(B, K*C, H, W)``."""
    return torch.cat(list(xs), dim=1)


def split_optimizer_state(sd: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """A packed optimiser ``state_dict`` -> K member ones (parameter indices coincide: same module names and order)."""
    def part(v: Any, i: int) -> Any:
        return v.chunk(k, 0)[i].clone() if torch.is_tensor(v) and v.dim() > 0 else copy.deepcopy(v)

    return [{"state": {idx: {n: part(v, i) for n, v in st.items()} for idx, st in sd["state"].items()},
             "param_groups": copy.deepcopy(sd["param_groups"])} for i in range(k)]


def merge_optimizer_states(sds: list[dict[str, Any]]) -> dict[str, Any]:
    """K member optimiser state dicts -> the packed one (inverse of :func:`split_optimizer_state`)."""
    state = {}
    for idx, st in sds[0]["state"].items():
        state[idx] = {n: torch.cat([s["state"][idx][n] for s in sds]) if torch.is_tensor(v) and v.dim() > 0
                      else copy.deepcopy(v) for n, v in st.items()}
    return {"state": state, "param_groups": copy.deepcopy(sds[0]["param_groups"])}
