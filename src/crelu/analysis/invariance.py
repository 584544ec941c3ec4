"""Invariance scores of Goodfellow et al. (2009) (Fig. 4; docs/analysis.md).

Definitions (Goodfellow et al. 2009, NIPS), for hidden unit i with response h_i(x):

* firing f_i(x) = 1[h_i(x) > t_i];
* global firing rate G(i) = E_x f_i(x), with t_i chosen so that G(i) = 0.01: t_i is the 99th percentile of h_i
  over the held-out images;
* local firing rate L(i) = 1/|Z| Σ_{z∈Z} 1/|T(z)| Σ_{x∈T(z)} f_i(x), Z = the |Z| held-out images with the
  largest h_i, T(z) a trajectory of transformed copies of z (:mod:`crelu.analysis.transforms`);
* score S(i) = L(i) / G(i); layer score = mean of S over the top-scoring 20% of the layer's units.

INFERRED details (all knobs of :class:`InvarianceConfig`):

* the unit is one channel at the centre position of a layer's read-out (:mod:`crelu.analysis.features`); every
  one of a CReLU layer's 2F channels is a unit; a response of exactly 0 never fires (strict ``>``);
* G in the ratio is the nominal rate (0.01), as in ``facundoq/tmeasures``.  A unit that cannot be thresholded
  to that rate because it is constant on most images (measured G below ``min_rate_fraction`` × the nominal
  rate, e.g. a dead ReLU) gets no score (NaN) and is left out of the layer score;
* each transform family (translation, rotation, scaling) is scored on its own; :func:`summarise` adds their
  mean.

All units of all layers are scored from one pass over the union of their Z sets: each image's trajectory is
run through the network once, in batches, and credited to every unit whose Z contains it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from crelu.analysis.transforms import TrajectoryConfig, apply_trajectory, trajectory
from crelu.training.progress import track

ResponseFn = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


@dataclass
class InvarianceConfig:
    firing_rate: float = 0.01  # nominal G(i): t_i is the (1 - rate) quantile of h_i
    num_top: int = 100  # |Z|
    top_fraction: float = 0.2  # layer score = mean over this top fraction of units
    min_rate_fraction: float = 0.5  # units whose measured G < this × firing_rate get no score
    batch_size: int = 512  # network inputs per forward pass (transformed copies included)
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)


@dataclass
class UnitScores:
    """Per-unit results of one layer for one transform family (all shape (U,))."""

    threshold: torch.Tensor
    global_rate: torch.Tensor  # measured on the held-out images (≈ firing_rate unless ties)
    local_rate: torch.Tensor
    score: torch.Tensor  # L / nominal G, NaN for units without a usable threshold

    def layer_score(self, top_fraction: float = 0.2) -> float:
        return layer_score(self.score, top_fraction)


def layer_score(scores: torch.Tensor, top_fraction: float = 0.2) -> float:
    """Mean of the top ``top_fraction`` of the finite scores (at least one unit); NaN if none is finite."""
    s = scores[torch.isfinite(scores)]
    if s.numel() == 0:
        return float("nan")
    k = max(1, math.ceil(top_fraction * s.numel()))
    return float(s.topk(k).values.mean())


@torch.no_grad()
def responses(
    fn: ResponseFn,
    images: torch.Tensor,
    batch_size: int = 512,
    progress: bool = False,
    desc: str = "responses",
) -> dict[str, torch.Tensor]:
    """``{layer: (N, U)}`` responses of ``fn`` on ``images`` (float32, CPU), in batches."""
    chunks: dict[str, list[torch.Tensor]] = {}
    for start in track(range(0, len(images), batch_size), desc=desc, disable=not progress, unit="batch"):
        for name, r in fn(images[start : start + batch_size]).items():
            chunks.setdefault(name, []).append(r.detach().float().cpu())
    return {name: torch.cat(c) for name, c in chunks.items()}


def thresholds(h: torch.Tensor, firing_rate: float) -> torch.Tensor:
    """Per-unit threshold: the (1 - rate) quantile of each column of h (N, U), nearest-rank."""
    n = h.shape[0]
    k = min(n - 1, max(0, int(round((1.0 - firing_rate) * (n - 1)))))
    return h.sort(dim=0).values[k]


@torch.no_grad()
def invariance_scores(
    fn: ResponseFn, images: torch.Tensor, cfg: InvarianceConfig | None = None, progress: bool = False
) -> dict[str, dict[str, UnitScores]]:
    """Score every unit ``fn`` exposes: ``{family: {layer: UnitScores}}``.

    ``fn`` maps a batch (B, C, H, W) to ``{layer: (B, U)}`` responses (e.g.
    :func:`crelu.analysis.features.centre_response_fn`); ``images`` are the held-out images, normalised.
    """
    cfg = cfg or InvarianceConfig()
    h = responses(fn, images, cfg.batch_size, progress, desc="held-out responses")
    n = images.shape[0]
    k = min(cfg.num_top, n)
    thr, grate, member, usable = {}, {}, {}, {}
    for name, hl in h.items():
        thr[name] = thresholds(hl, cfg.firing_rate)
        grate[name] = (hl > thr[name]).float().mean(0)
        usable[name] = grate[name] >= cfg.min_rate_fraction * cfg.firing_rate
        m = torch.zeros_like(hl, dtype=torch.bool)
        m.scatter_(0, hl.topk(k, dim=0).indices, True)
        member[name] = m
    union = torch.stack([m.any(1) for m in member.values()]).any(0).nonzero().squeeze(1)

    out: dict[str, dict[str, UnitScores]] = {}
    _, _, height, width = images.shape
    for family in cfg.trajectory.families:
        thetas = trajectory(family, height, width, cfg.trajectory)
        t = thetas.shape[0]
        per_batch = max(1, cfg.batch_size // t)
        lsum = {name: torch.zeros(hl.shape[1]) for name, hl in h.items()}
        for start in track(
            range(0, len(union), per_batch), desc=f"{family} trajectories", disable=not progress, unit="batch"
        ):
            idx = union[start : start + per_batch]
            resp = fn(apply_trajectory(images[idx], thetas))
            for name, r in resp.items():
                fire = (r.float().cpu().reshape(len(idx), t, -1) > thr[name]).float().mean(1)  # (B, U)
                lsum[name] += (fire * member[name][idx]).sum(0)
        out[family] = {}
        for name in h:
            local = lsum[name] / k
            score = torch.where(usable[name], local / cfg.firing_rate, torch.full_like(local, float("nan")))
            out[family][name] = UnitScores(thr[name], grate[name], local, score)
    return out


def summarise(
    scores: Mapping[str, Mapping[str, UnitScores]], top_fraction: float = 0.2
) -> dict[str, dict[str, float]]:
    """``{layer: {family: layer score, ..., "mean": mean over families}}``."""
    table: dict[str, dict[str, float]] = {}
    for family, layers in scores.items():
        for name, us in layers.items():
            table.setdefault(name, {})[family] = us.layer_score(top_fraction)
    for row in table.values():
        vals = [v for v in row.values() if math.isfinite(v)]
        row["mean"] = sum(vals) / len(vals) if vals else float("nan")
    return table
