"""Transformation trajectories T(z) for the invariance score (docs/analysis.md; INFERRED defaults, all knobs).

A trajectory is a stack of 2×3 affine matrices in ``F.affine_grid``'s normalised coordinates
(align_corners=False) and is applied to a batch of images in one ``grid_sample`` call with
``padding_mode="reflection"`` (reflected borders; grid_sample mirrors about the border, i.e. numpy's
"symmetric" mode).  Integer pixel translations land exactly on pixel centres, so they are pure shifts.

Defaults: translations of -4..4 px in x and y in steps of 2 (CIFAR; ImageNet uses -16..16), rotations of
-30°..30° in steps of 6°, isotropic scalings 0.8..1.2 in steps of 0.1.  Each family is scored separately; the
identity is part of every trajectory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

FAMILIES = ("translation", "rotation", "scaling")


@dataclass
class TrajectoryConfig:
    max_shift: int = 4  # px; ImageNet: 16
    shift_step: int = 2
    max_angle: float = 30.0  # degrees
    angle_step: float = 6.0
    scales: Sequence[float] = field(default_factory=lambda: (0.8, 0.9, 1.0, 1.1, 1.2))
    families: Sequence[str] = FAMILIES


def _arange_sym(limit: float, step: float) -> list[float]:
    n = int(math.floor(limit / step + 1e-9))
    return [k * step for k in range(-n, n + 1)]


def translation_thetas(height: int, width: int, max_shift: int, step: int) -> torch.Tensor:
    """All (dx, dy) shifts on the grid -max..max (step) in both axes: ((2m/step+1)², 2, 3)."""
    shifts = _arange_sym(max_shift, step)
    thetas = []
    for dy in shifts:
        for dx in shifts:
            # The output pixel u samples the input at u - d: shifts the content by +d pixels.
            thetas.append([[1.0, 0.0, -2.0 * dx / width], [0.0, 1.0, -2.0 * dy / height]])
    return torch.tensor(thetas)


def rotation_thetas(max_angle: float, step: float) -> torch.Tensor:
    """Rotations about the image centre by -max..max degrees (square images; for others the normalised
    coordinates make it a slight shear, acceptable for a knob-level INFERRED procedure)."""
    thetas = []
    for deg in _arange_sym(max_angle, step):
        a = math.radians(deg)
        thetas.append([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
    return torch.tensor(thetas)


def scaling_thetas(scales: Sequence[float]) -> torch.Tensor:
    """Isotropic zooms about the centre; scale s > 1 enlarges the content."""
    return torch.tensor([[[1.0 / s, 0.0, 0.0], [0.0, 1.0 / s, 0.0]] for s in scales])


def trajectory(family: str, height: int, width: int, cfg: TrajectoryConfig) -> torch.Tensor:
    """The (T, 2, 3) affine matrices of one transform family."""
    if family == "translation":
        return translation_thetas(height, width, cfg.max_shift, cfg.shift_step)
    if family == "rotation":
        return rotation_thetas(cfg.max_angle, cfg.angle_step)
    if family == "scaling":
        return scaling_thetas(cfg.scales)
    raise ValueError(f"unknown transform family {family!r}; use one of {FAMILIES}")


def apply_trajectory(x: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images, (T, 2, 3) matrices -> (B*T, C, H, W), image-major (T copies of image 0 first)."""
    b, c, h, w = x.shape
    t = thetas.shape[0]
    theta = thetas.to(device=x.device, dtype=x.dtype).repeat(b, 1, 1)
    grid = F.affine_grid(theta, [b * t, c, h, w], align_corners=False)
    xs = x.repeat_interleave(t, dim=0)
    return F.grid_sample(xs, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
