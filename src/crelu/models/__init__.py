"""The paper's networks, built from a ``model`` config by family name.

``build_model(cfg.model, num_classes)`` returns a :class:`~crelu.models.base.PaperNet`.  Families:
``convpool_c`` (Table 1), ``vgg`` (Table 2), ``allcnn_b`` (Tables 4/5).
"""

from __future__ import annotations

from collections.abc import Callable

from crelu.models.allcnn import ALLCNN_B, build_allcnn_b
from crelu.models.base import PaperNet
from crelu.models.convpool import CONVPOOL_C, build_convpool_c
from crelu.models.plan import LayerPlan, ModelConfigError, format_plan, resolve_plan
from crelu.models.vgg import VGG16, build_vgg

MODEL_FAMILIES: dict[str, Callable[..., PaperNet]] = {
    "convpool_c": build_convpool_c,
    "vgg": build_vgg,
    "allcnn_b": build_allcnn_b,
}


def check_input_size(model: PaperNet, image_size: int, dataset: str = "") -> None:
    """Run a shape-only forward (meta device, no memory, no compute) and turn a size mismatch into a clear error.

    Catches incompatible dataset/model combinations before any data is loaded, e.g. All-CNN-B (which needs at
    least 67x67 inputs) on 32x32 CIFAR images, or VGG's 512-wide classifier on 227x227 ImageNet crops.
    """
    import copy

    import torch

    probe = copy.deepcopy(model).to("meta").eval()
    try:
        with torch.no_grad():
            out = probe(torch.empty(2, 3, image_size, image_size, device="meta"))
    except RuntimeError as e:
        raise ModelConfigError(
            f"model family {model.family!r} cannot take {image_size}x{image_size} inputs"
            f"{f' of dataset {dataset!r}' if dataset else ''}: {str(e).splitlines()[0]}. Use a dataset/model "
            "combination of the paper (ConvPool-CNN-C and VGG on CIFAR, All-CNN-B on ImageNet) or change "
            "dataset.image_size."
        ) from None
    if tuple(out.shape) != (2, model.num_classes):
        raise ModelConfigError(f"model output has shape {tuple(out.shape)[1:]} per image, expected "
                               f"({model.num_classes},) class scores for {image_size}x{image_size} inputs")


def build_model(cfg, num_classes: int) -> PaperNet:
    """Build the network described by ``cfg`` (a ``ModelConfig`` or anything with the same fields)."""
    try:
        builder = MODEL_FAMILIES[cfg.family]
    except KeyError:
        raise ModelConfigError(
            f"unknown model family {cfg.family!r}; available: {sorted(MODEL_FAMILIES)}"
        ) from None
    return builder(cfg, num_classes)


__all__ = [
    "ALLCNN_B",
    "CONVPOOL_C",
    "MODEL_FAMILIES",
    "VGG16",
    "LayerPlan",
    "ModelConfigError",
    "PaperNet",
    "build_model",
    "check_input_size",
    "format_plan",
    "resolve_plan",
]
