"""Table 6: pair against non-pair correlation of a CReLU layer's outgoing weights (docs/analysis.md).

For CReLU layer l with F filters the next conv's weight is V ∈ R^{F'×2F×k×k}.  The outgoing weight vectors of
positive-phase channel i and negative-phase channel F+i (channel order of :class:`crelu.nn.activations.CReLU`)
are v_i⁺ = vec(V[:, i]) and v_i⁻ = vec(V[:, F+i]), each scaled to unit ℓ2 norm.

* pair_i = <v̂_i⁺, v̂_i⁻>, i = 1..F;
* non-pair = <v̂_i⁺, v̂_j⁻> over j ≠ i: every off-diagonal (i, j) (``nonpair="all"``, default) or one random j
  ≠ i per i (``nonpair="random"``, seeded);
* mean ± std over the values.

INFERRED: the paper's means are close to their stds, which suggests |cos| was averaged; both
the signed and the absolute cosines are computed and |cos| is the primary column compared with the paper.  The
std is the population std (ddof = 0); the paper does not say.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from crelu.results.io import atomic_write_text

NONPAIR_MODES = ("all", "random")


@dataclass
class OutgoingStats:
    layer: str
    filters: int
    pair: torch.Tensor  # signed cosines, (F,)
    nonpair: torch.Tensor  # signed cosines, (F*(F-1),) or (F,)

    def summary(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {"layer": self.layer, "filters": self.filters}
        for key, v in (("pair", self.pair), ("nonpair", self.nonpair)):
            out[f"n_{key}"] = int(v.numel())
            for kind, vals in (("abs", v.abs()), ("signed", v)):
                out[f"{key}_{kind}_mean"] = float(vals.mean())
                out[f"{key}_{kind}_std"] = float(vals.std(unbiased=False))
        return out


def outgoing_correlations(
    next_weight: torch.Tensor, num_filters: int, nonpair: str = "all", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed (pair, non-pair) cos of the outgoing weights of a CReLU layer with ``num_filters`` filters."""
    if nonpair not in NONPAIR_MODES:
        raise ValueError(f"nonpair must be one of {NONPAIR_MODES}, got {nonpair!r}")
    f = num_filters
    if next_weight.shape[1] != 2 * f:
        raise ValueError(f"next conv has {next_weight.shape[1]} input channels, expected 2F = {2 * f}")
    if f < 2:
        raise ValueError("non-pair correlations need at least 2 filters")
    v = next_weight.detach().to(torch.float64).transpose(0, 1).reshape(2 * f, -1)
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    c = v[:f] @ v[f:].T  # c[i, j] = <v_i+, v_j->
    pair = c.diagonal().clone()
    if nonpair == "all":
        return pair, c[~torch.eye(f, dtype=torch.bool)]
    gen = torch.Generator().manual_seed(seed)
    j = (torch.arange(f) + torch.randint(1, f, (f,), generator=gen)) % f  # uniform over j != i
    return pair, c[torch.arange(f), j]


def model_table6(model: nn.Module, nonpair: str = "all", seed: int = 0) -> list[OutgoingStats]:
    """Stats for every CReLU conv of a PaperNet that has a next conv (conv1..conv7 of CReLU (conv1-7))."""
    plan = model.plan
    out = []
    for p, nxt in zip(plan[:-1], plan[1:]):
        if p.activation != "crelu":
            continue
        pair, non = outgoing_correlations(model.conv(nxt.index).weight, p.filters, nonpair, seed + p.index)
        out.append(OutgoingStats(p.name, p.filters, pair, non))
    return out


def read_paper_table6(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """``{layer: {pair_mean, pair_std, nonpair_mean, nonpair_std}}`` from ``results/paper_table6.csv``."""
    with open(path, newline="") as f:
        return {r["layer"]: {k: float(v) for k, v in r.items() if k != "layer"} for r in csv.DictReader(f)}


_COLUMNS = [
    "layer",
    "filters",
    "paper_pair_mean",
    "paper_pair_std",
    "paper_nonpair_mean",
    "paper_nonpair_std",
    "pair_abs_mean",
    "pair_abs_std",
    "nonpair_abs_mean",
    "nonpair_abs_std",
    "pair_signed_mean",
    "pair_signed_std",
    "nonpair_signed_mean",
    "nonpair_signed_std",
    "n_pair",
    "n_nonpair",
]


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None or std is None or not math.isfinite(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}"


def write_table6(
    stats: list[OutgoingStats],
    paper: dict[str, dict[str, float]],
    out_dir: str | os.PathLike,
    stem: str = "table6",
    source: str = "",
    nonpair: str = "all",
) -> list[Path]:
    """Write ``{stem}.csv`` and ``{stem}.md`` (paper values beside ours, |cos| primary); returns the paths."""
    out_dir = Path(out_dir)
    rows = []
    for s in stats:
        row = s.summary()
        ref = paper.get(s.layer, {})
        for k in ("pair_mean", "pair_std", "nonpair_mean", "nonpair_std"):
            row[f"paper_{k}"] = ref.get(k)
        rows.append(row)
    lines = [",".join(_COLUMNS)]
    for r in rows:
        lines.append(
            ",".join(
                "" if r.get(c) is None else (f"{r[c]:.6f}" if isinstance(r[c], float) else str(r[c]))
                for c in _COLUMNS
            )
        )
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    atomic_write_text(csv_path, "\n".join(lines) + "\n")

    md = [
        f"# {stem}: correlation of normalized outgoing weights (mean ± std)",
        "",
        f"Model: {source or 'n/a'}.",
        "Ours = cosine between the next conv's unit-normalised outgoing weights of channel i and F+i (pair)",
        f"and of i and j≠i (non-pair, `{nonpair}`); |cos| is the primary column",
        "(INFERRED, docs/analysis.md), signed values for reference. Paper: Table 6 (ImageNet CReLU conv1–7).",
        "",
        "| layer | paper pair | ours pair \\|cos\\| | paper non-pair | ours non-pair \\|cos\\| "
        "| ours pair (signed) | ours non-pair (signed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['layer']} | {_pm(r['paper_pair_mean'], r['paper_pair_std'])} "
            f"| {_pm(r['pair_abs_mean'], r['pair_abs_std'])} "
            f"| {_pm(r['paper_nonpair_mean'], r['paper_nonpair_std'])} "
            f"| {_pm(r['nonpair_abs_mean'], r['nonpair_abs_std'])} "
            f"| {_pm(r['pair_signed_mean'], r['pair_signed_std'])} "
            f"| {_pm(r['nonpair_signed_mean'], r['nonpair_signed_std'])} |"
        )
    atomic_write_text(md_path, "\n".join(md) + "\n")
    return [csv_path, md_path]
