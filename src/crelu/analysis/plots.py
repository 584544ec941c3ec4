"""Figures of the analysis suite (Figs 1-5), drawn with matplotlib's Agg canvas and written atomically.

Figures are built as ``matplotlib.figure.Figure`` objects on an explicit ``FigureCanvasAgg`` (no pyplot, no
GUI backend, no global state), and :func:`save_figure` writes each as PNG and PDF through
:func:`crelu.results.io.atomic_write_bytes`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crelu.analysis.pairing import LayerPairing
from crelu.results.io import atomic_write_bytes

HIST_RANGE = (-1.0, 0.2)  # INFERRED: the paper does not give its bins
HIST_BINS = 50


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem: str | os.PathLike, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically; returns the paths written."""
    paths = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        atomic_write_bytes(path, lambda f, fmt=fmt: fig.savefig(f, format=fmt, dpi=150))
        paths.append(path)
    return paths


def plot_pairing_histograms(
    rows: Sequence[tuple[str, Sequence[LayerPairing]]],
    stem: str | os.PathLike,
    bins: int = HIST_BINS,
    value_range: tuple[float, float] = HIST_RANGE,
) -> list[Path]:
    """Figs 2/3: one row per model, one panel per layer; µ^w blue, µ^r red."""
    ncols = max(len(layers) for _, layers in rows)
    fig = new_figure(2.4 * ncols, 2.2 * len(rows))
    axes = np.atleast_2d(fig.subplots(len(rows), ncols, squeeze=False))
    edges = np.linspace(*value_range, bins + 1)
    for r, (label, layers) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(layers):
                ax.axis("off")
                continue
            lp = layers[c]
            kw = {"bins": edges, "histtype": "stepfilled"}  # one polygon per histogram (fast to draw)
            ax.hist(lp.mu_w.numpy(), color="tab:blue", alpha=0.7, label="µ^w (trained)", **kw)
            ax.hist(lp.mu_r.numpy(), color="tab:red", alpha=0.6, label="µ^r (random)", **kw)
            ax.set_title(f"{label}: {lp.name}", fontsize=8)
            ax.tick_params(labelsize=7)
            if r == len(rows) - 1:
                ax.set_xlabel("µ (most negative cosine)", fontsize=7)
            if r == 0 and c == 0:
                ax.legend(fontsize=6)
    return save_figure(fig, stem)


def plot_layer_histograms(
    label: str,
    layers: Sequence[LayerPairing],
    stem: str | os.PathLike,
    ncols: int = 6,
    bins: int = HIST_BINS,
) -> list[Path]:
    """µ^w (blue) against µ^r (red) for every layer of one network, ``ncols`` panels per row.

    The range is [-1, 0.2] as in :func:`plot_pairing_histograms`, widened when a layer's µ goes beyond it
    (small filters, e.g. depthwise 3×3 convs, can have µ > 0.2).
    """
    hi = max(HIST_RANGE[1], *(float(torch.cat([lp.mu_w, lp.mu_r]).max()) for lp in layers))
    edges = np.linspace(HIST_RANGE[0], min(hi + 1e-9, 1.0), bins + 1)
    ncols = max(1, min(ncols, len(layers)))
    nrows = math.ceil(len(layers) / ncols)
    fig = new_figure(2.4 * ncols, 2.0 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(layers):]:
        ax.axis("off")
    for ax, lp in zip(axes.flat, layers):
        kw = {"bins": edges, "histtype": "stepfilled"}
        ax.hist(lp.mu_w.numpy(), color="tab:blue", alpha=0.7, label="µ^w (network)", **kw)
        ax.hist(lp.mu_r.numpy(), color="tab:red", alpha=0.6, label="µ^r (random)", **kw)
        ax.set_title(f"{lp.name} ({lp.num_filters}×{lp.dim})", fontsize=7)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(f"{label}: µ = most negative cosine to another filter, per conv layer", fontsize=9)
    return save_figure(fig, stem)


def _filter_rgb(w: torch.Tensor) -> np.ndarray:
    """(C, k, k) filter -> (k, k, 3) image in [0, 1], symmetric scaling so 0 is mid-grey."""
    w = w.detach().to(torch.float64)
    w = w / w.abs().max().clamp_min(1e-12) * 0.5 + 0.5
    img = w.permute(1, 2, 0).numpy()
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def filter_pair_mosaic(
    weight: torch.Tensor,
    partner: torch.Tensor,
    max_pairs: int = 48,
    columns: int = 8,
    gap: int = 1,
    sep: int = 3,
) -> np.ndarray:
    """One RGB image of (filter | pairing filter) tiles, ``columns`` pairs per row, on white.

    ``gap`` px separate a filter from its pair, ``sep`` px separate neighbouring pairs.
    """
    if weight.dim() != 4 or weight.shape[1] not in (1, 3):
        raise ValueError(f"filter pairs need a conv with 1 or 3 input channels, got {tuple(weight.shape)}")
    n = min(max_pairs, weight.shape[0])
    k_h, k_w = weight.shape[2:]
    tile_w = 2 * k_w + gap
    rows = math.ceil(n / columns)
    canvas = np.ones((rows * (k_h + sep) + sep, columns * (tile_w + sep) + sep, 3))
    for i in range(n):
        r, c = divmod(i, columns)
        top, left = sep + r * (k_h + sep), sep + c * (tile_w + sep)
        canvas[top : top + k_h, left : left + k_w] = _filter_rgb(weight[i])
        canvas[top : top + k_h, left + k_w + gap : left + tile_w] = _filter_rgb(weight[int(partner[i])])
    return canvas


def plot_filter_pairs(
    weight: torch.Tensor,
    partner: torch.Tensor,
    stem: str | os.PathLike,
    max_pairs: int = 48,
    columns: int = 8,
    title: str = "",
) -> list[Path]:
    """Fig. 1: each first-layer filter next to its pairing filter (RGB or grey filters only)."""
    mosaic = filter_pair_mosaic(weight, partner, max_pairs, columns)
    fig = new_figure(1.1 * columns, 1.1 * columns * mosaic.shape[0] / mosaic.shape[1] + (0.3 if title else 0))
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=8)
    return save_figure(fig, stem)


def plot_invariance(
    scores: Mapping[str, Mapping[str, Mapping[str, float]]], stem: str | os.PathLike, title: str = ""
) -> list[Path]:
    """Fig. 4: layer scores (``{model: {layer: {family: score, "mean": ...}}}``), one panel per family."""
    models = list(scores)
    layers = list(next(iter(scores.values())))
    families = list(next(iter(next(iter(scores.values())).values())))
    fig = new_figure(3.0 * len(families), 2.8)
    axes = fig.subplots(1, len(families), squeeze=False)[0]
    x = np.arange(len(layers))
    width = 0.8 / len(models)
    for ax, fam in zip(axes, families):
        for m, model in enumerate(models):
            vals = [scores[model].get(layer, {}).get(fam, float("nan")) for layer in layers]
            ax.bar(x + (m - (len(models) - 1) / 2) * width, vals, width, label=model)
        ax.set_xticks(x, layers, fontsize=7, rotation=45)
        ax.set_title(fam, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("invariance score (top 20% units)", fontsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(models), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, stem)


def plot_reconstructions(
    originals: torch.Tensor,
    rows: Sequence[tuple[str, Sequence[tuple[str, torch.Tensor]]]],
    stem: str | os.PathLike,
    title: str = "",
) -> list[Path]:
    """Fig. 5: per row the original image then its reconstructions from each layer.

    ``originals``: (R, C, H, W) display images in [0, 1], one per row;
    ``rows``: (label, [(layer, image), ...]).
    """
    ncols = 1 + max(len(r[1]) for r in rows)
    fig = new_figure(1.6 * ncols, 1.7 * len(rows))
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (label, recs) in enumerate(rows):
        axes[r, 0].imshow(_to_hwc(originals[r]))
        axes[r, 0].set_title(f"{label}\noriginal", fontsize=6)
        for c, (layer, img) in enumerate(recs, 1):
            axes[r, c].imshow(_to_hwc(img))
            axes[r, c].set_title(layer, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, stem)


def _to_hwc(img: torch.Tensor) -> np.ndarray:
    a = img.detach().to(torch.float64).clamp(0, 1).permute(1, 2, 0).numpy()
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a
