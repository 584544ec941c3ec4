"""Layer plans: which conv layer gets which activation and how many filters, validated before any training.

A *plan* is the resolved, per-conv-layer description of a network (paper layer index, kernel, stride, padding,
input channels, filters, activation, output channels).  Every model family declares its baseline layer list;
:func:`resolve_plan` applies the config (activation placement, halving, width multiplier) and raises
:class:`ModelConfigError` with a precise message for impossible placements: an index out of range, a layer given
two activations, halving an odd filter count, or a CReLU on the classifier conv that would emit the wrong number
of class maps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from crelu.nn import ACTIVATIONS, activation_channel_factor


class ModelConfigError(ValueError):
    """Raised when a model config asks for an architecture that cannot be built."""


@dataclass(frozen=True)
class ConvSpec:
    """One conv layer of a family's *baseline* (paper index is 1-based: conv1, conv2, ...)."""

    index: int
    kernel: int
    stride: int
    padding: int
    filters: int  # baseline filter count (ignored for a classifier conv: num_classes)
    classifier: bool = False  # the conv that emits the class maps (ConvPool conv9, All-CNN-B conv12)


@dataclass(frozen=True)
class LayerPlan:
    """A resolved conv layer: what is actually built."""

    index: int
    kernel: int
    stride: int
    padding: int
    in_channels: int
    filters: int
    activation: str
    out_channels: int  # channels after the activation (2 * filters for CReLU)
    halved: bool
    classifier: bool

    @property
    def name(self) -> str:
        return f"conv{self.index}"


def resolve_plan(
    family: str,
    specs: Sequence[ConvSpec],
    *,
    num_classes: int,
    in_channels: int = 3,
    activation: str = "relu",
    activation_layers: Mapping[str, Sequence[int]] | None = None,
    halve_layers: Sequence[int] = (),
    width_mult: float = 1.0,
    classifier_activation: str = "relu",
) -> list[LayerPlan]:
    """Apply activation placement / halving / widening to a baseline layer list and validate the result.

    * ``activation``: default activation of every non-classifier conv.
    * ``activation_layers``: ``{activation_name: [conv indices]}`` overrides (e.g. ``{"crelu": [1, 3, 5]}``).
    * ``halve_layers``: conv indices whose filter count is halved (the paper's "half" rows).
    * ``width_mult``: multiplies every non-classifier filter count (the "double" row uses 2).
    * ``classifier_activation``: activation of the classifier conv unless overridden by ``activation_layers``.
    """
    n = len(specs)
    valid = range(1, n + 1)
    where = f"model family {family!r} has conv layers 1..{n}"
    activation_layers = dict(activation_layers or {})
    for act in [activation, classifier_activation, *activation_layers]:
        if act not in ACTIVATIONS:
            raise ModelConfigError(f"unknown activation {act!r}; registered activations: {sorted(ACTIVATIONS)}")
    if width_mult <= 0:
        raise ModelConfigError(f"model.width_mult must be > 0, got {width_mult}")

    assigned: dict[int, str] = {}
    for act, idxs in activation_layers.items():
        for i in idxs:
            if i not in valid:
                raise ModelConfigError(f"model.activation_layers.{act}: conv{i} does not exist ({where})")
            if i in assigned and assigned[i] != act:
                raise ModelConfigError(
                    f"conv{i} is listed for two activations ({assigned[i]!r} and {act!r}) in model.activation_layers"
                )
            assigned[i] = act
    for i in halve_layers:
        if i not in valid:
            raise ModelConfigError(f"model.halve_layers: conv{i} does not exist ({where})")

    plan: list[LayerPlan] = []
    cin = in_channels
    for spec in specs:
        act = assigned.get(spec.index, classifier_activation if spec.classifier else activation)
        halved = spec.index in halve_layers
        if spec.classifier:
            factor = activation_channel_factor(act)
            if halved:
                if num_classes % 2:
                    raise ModelConfigError(f"cannot halve classifier conv{spec.index}: {num_classes} classes is odd")
                filters = num_classes // 2
            else:
                filters = num_classes
            if filters * factor != num_classes:
                raise ModelConfigError(
                    f"{act} on classifier conv{spec.index} would emit {filters * factor} class maps for "
                    f"{num_classes} classes. The classifier conv's consumer is the global average pool that makes "
                    f"the logits, so its output channels must equal the class count: remove conv{spec.index} from "
                    f"model.activation_layers.{act}"
                    + (f" or also list it in model.halve_layers ({num_classes // 2} filters)" if factor == 2 else "")
                )
        else:
            filters = int(round(spec.filters * width_mult))
            if halved:
                if filters % 2:
                    raise ModelConfigError(f"cannot halve conv{spec.index}: {filters} filters is odd")
                filters //= 2
        if filters < 1:
            raise ModelConfigError(f"conv{spec.index} would have {filters} filters")
        out = filters * activation_channel_factor(act)
        plan.append(
            LayerPlan(
                index=spec.index,
                kernel=spec.kernel,
                stride=spec.stride,
                padding=spec.padding,
                in_channels=cin,
                filters=filters,
                activation=act,
                out_channels=out,
                halved=halved,
                classifier=spec.classifier,
            )
        )
        cin = out
    return plan


def plan_from_config(family: str, specs: Sequence[ConvSpec], cfg, num_classes: int) -> list[LayerPlan]:
    """:func:`resolve_plan` with the placement/width fields of a ``ModelConfig``."""
    return resolve_plan(
        family,
        specs,
        num_classes=num_classes,
        activation=cfg.activation,
        activation_layers=cfg.activation_layers,
        halve_layers=cfg.halve_layers,
        width_mult=cfg.width_mult * cfg.width_scale,
        classifier_activation=cfg.classifier_activation,
    )


def with_padding(specs: Sequence[ConvSpec], index: int, padding: int) -> list[ConvSpec]:
    """Return ``specs`` with conv ``index``'s padding replaced."""
    return [replace(s, padding=padding) if s.index == index else s for s in specs]


def format_plan(plan: Sequence[LayerPlan]) -> str:
    """Human-readable layer table (used by ``crelu-train model.describe``-style printing and docs)."""
    lines = [f"{'layer':<7}{'k/s/p':<9}{'C_in':>6}{'F':>6}  {'act':<6}{'C_out':>6}"]
    for p in plan:
        k = f"{p.kernel}/{p.stride}/{p.padding}"
        flag = " (half)" if p.halved else ""
        lines.append(f"{p.name:<7}{k:<9}{p.in_channels:>6}{p.filters:>6}  {p.activation:<6}{p.out_channels:>6}{flag}")
    return "\n".join(lines)
