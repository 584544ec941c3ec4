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
    "format_plan",
    "resolve_plan",
]
