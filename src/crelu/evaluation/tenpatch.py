"""Centre-crop and 10-patch evaluation (docs/recipes.md, [BASE-RECALL: Krizhevsky et al. 2012]).

* **Centre crop**: the central ``size x size`` patch of the (already resized) validation image.
* **10 patches (†)**: the four corner patches and the centre patch, plus their horizontal mirrors; the softmax
  scores of the 10 patches are averaged, then top-1/top-5 are taken from the average.

Everything here is a pure function of tensors except :func:`crop_error_counts`, which runs a model over batches
of full validation images and returns *counts* (so a data-parallel run can sum them over ranks before
:func:`errors_from_counts` turns them into percentages).

Conventions:

* patch order of :func:`ten_crops`: top-left, top-right, bottom-left, bottom-right, centre, then the mirrors of
  those five in the same order;
* the centre offset is ``round((full - size) / 2)`` (Python rounding), torchvision's ``center_crop`` convention,
  so the centre patch here equals the training pipeline's centre crop;
* top-k with k larger than the number of classes counts every image as correct at that k (INFERRED; only tiny
  generated datasets have fewer than 5 classes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch

EVAL_MODES = ("center", "tenpatch", "both")
TOPK = (1, 5)


def center_offset(full: int, size: int) -> int:
    """Offset of a centred ``size`` window in ``full`` pixels (torchvision's ``center_crop`` rounding)."""
    if size > full:
        raise ValueError(f"crop size {size} is larger than the image ({full} px)")
    return int(round((full - size) / 2.0))


def crop_offsets(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """``(top, left)`` of the four corner patches and the centre patch, in :func:`ten_crops` order."""
    if size > height or size > width:
        raise ValueError(f"crop size {size} does not fit a {height}x{width} image")
    b, r = height - size, width - size
    return [(0, 0), (0, r), (b, 0), (b, r), (center_offset(height, size), center_offset(width, size))]


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size x size`` patch of ``x [..., H, W]`` (a view)."""
    top, left = crop_offsets(x.shape[-2], x.shape[-1], size)[4]
    return x[..., top : top + size, left : left + size]


def patches(x: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """The 10 patches of ``x [..., H, W]`` one at a time (corners + centre as views, then their mirrors)."""
    five = [x[..., t : t + size, l : l + size] for t, l in crop_offsets(x.shape[-2], x.shape[-1], size)]
    yield from five
    for c in five:
        yield c.flip(-1)


def ten_crops(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[10, *x.shape[:-2], size, size]``: corners + centre of ``x [..., H, W]``, then their mirrors."""
    return torch.stack(list(patches(x, size)))


def average_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Mean softmax over the leading (patch) axis: ``[P, N, K] -> [N, K]`` (float32)."""
    return logits.float().softmax(-1).mean(0)


def topk_wrong(scores: torch.Tensor, labels: torch.Tensor, ks: Iterable[int] = TOPK) -> dict[int, torch.Tensor]:
    """Number of rows of ``scores [N, K]`` whose label is not among the ``k`` highest scores, for each k."""
    ks = tuple(ks)
    kmax = min(max(ks), scores.shape[1])
    # highest first; a stable sort breaks ties toward the lower class index, as argmax does (a ReLU classifier's
    # exact zeros tie), so top-1 here is the error the training loop reports
    top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :kmax]  # [N, kmax]
    hits = top == labels.view(-1, 1)
    return {k: (~hits[:, : min(k, kmax)].any(1)).sum() for k in ks}


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def crop_error_counts(model, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, size: int,
                      eval_mode: str = "both", amp_dtype: torch.dtype | None = None,
                      channels_last: bool = False) -> dict[str, torch.Tensor]:
    """Run ``model`` (eval mode) on the patches of every ``(x [N, C, H, W], y)`` batch; return error counts.

    Keys: ``n`` (images) and ``wrong{k}_center`` / ``wrong{k}_10patch`` for k in (1, 5), as requested by
    ``eval_mode`` (center | tenpatch | both).  ``x`` holds full, normalised validation images; patches are cut
    here.  With ``both`` the centre patch's logits are shared by the two measures.
    """
    if eval_mode not in EVAL_MODES:
        raise ValueError(f"protocol.eval_mode must be one of {EVAL_MODES}, got {eval_mode!r}")
    model.eval()
    where = {"center": ("center",), "tenpatch": ("10patch",), "both": ("center", "10patch")}[eval_mode]
    zero = torch.zeros((), dtype=torch.int64)  # every key exists even without images (DDP sums by key)
    counts = {"n": zero, **{f"wrong{k}_{w}": zero for w in where for k in TOPK}}

    def add(key: str, value: torch.Tensor) -> None:
        counts[key] = counts[key] + value

    for x, y in batches:
        with _autocast(x.device, amp_dtype):
            views = [center_crop(x, size)] if eval_mode == "center" else patches(x, size)  # one patch at a time
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            logits = torch.stack([model(p.contiguous(memory_format=fmt)).float() for p in views])
        add("n", torch.tensor(y.shape[0], device=y.device))
        if eval_mode in ("center", "both"):
            for k, w in topk_wrong(logits[0 if eval_mode == "center" else 4], y).items():
                add(f"wrong{k}_center", w)
        if eval_mode in ("tenpatch", "both"):
            for k, w in topk_wrong(average_softmax(logits), y).items():
                add(f"wrong{k}_10patch", w)
    return counts


def errors_from_counts(counts: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """``top{k}_center`` / ``top{k}_10patch`` errors in percent from :func:`crop_error_counts` (maybe summed)."""
    n = float(counts.get("n", 0))
    if n <= 0:
        raise ValueError("no validation images were evaluated")
    out = {}
    for key, value in counts.items():
        if key.startswith("wrong"):
            k, where = key[len("wrong"):].split("_", 1)
            out[f"top{k}_{where}"] = 100.0 * float(value) / n
    return out
