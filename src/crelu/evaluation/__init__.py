"""Evaluation protocols that act on model outputs: ImageNet centre-crop and 10-patch top-k errors."""

from crelu.evaluation.tenpatch import (
    EVAL_MODES,
    average_softmax,
    center_crop,
    crop_error_counts,
    crop_offsets,
    errors_from_counts,
    patches,
    ten_crops,
    topk_wrong,
)

__all__ = [
    "EVAL_MODES",
    "average_softmax",
    "center_crop",
    "crop_error_counts",
    "crop_offsets",
    "errors_from_counts",
    "patches",
    "ten_crops",
    "topk_wrong",
]
