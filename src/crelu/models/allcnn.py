"""All-CNN-B (Springenberg et al. 2014, ImageNet model), the Tables 4/5 family.

Layer list per docs/recipes.md ([BASE-RECALL: Springenberg appendix]); it reproduces the paper's 9.4M (9.37M) and
the CReLU rows' 8.6M / 10.1M / 4.7M to within 0.5%, which confirms the list and the halving rules.

INFERRED choices (docs/recipes.md), all knobs:
* 227x227 input with conv1 unpadded (or ``first_padding=2`` with 224 crops), so maps go 55 -> 27 -> 13 -> 6;
* dropout 0.5 after conv9's activation (Springenberg; per-row rates unknown);
* CReLU (all) gives the classifier conv12 500 filters followed by CReLU -> 1000 class maps (forced by 4.7M);
* AVR rows keep the baseline filter counts;
* He-normal (fan-in) init at full variance (``init_scale=1``, see :func:`crelu.models.base.init_convs_`), zero
  biases.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from crelu.models.base import GlobalAvgPool, PaperNet, conv_block, init_convs_
from crelu.models.plan import ConvSpec, plan_from_config, with_padding

ALLCNN_B = [
    ConvSpec(1, 11, 4, 0, 96),
    ConvSpec(2, 1, 1, 0, 96),
    ConvSpec(3, 3, 2, 0, 96),
    ConvSpec(4, 5, 1, 2, 256),
    ConvSpec(5, 1, 1, 0, 256),
    ConvSpec(6, 3, 2, 0, 256),
    ConvSpec(7, 3, 1, 1, 384),
    ConvSpec(8, 1, 1, 0, 384),
    ConvSpec(9, 3, 2, 0, 384),
    ConvSpec(10, 3, 1, 1, 1024),
    ConvSpec(11, 1, 1, 0, 1024),
    ConvSpec(12, 1, 1, 0, 0, classifier=True),
]
DROPOUT_AFTER = 9


def build_allcnn_b(cfg, num_classes: int) -> PaperNet:
    specs = ALLCNN_B if cfg.first_padding is None else with_padding(ALLCNN_B, 1, cfg.first_padding)
    plan = plan_from_config("allcnn_b", specs, cfg, num_classes)
    mods: list[tuple[str, nn.Module]] = []
    if cfg.dropout_input > 0:
        mods.append(("drop_input", nn.Dropout(cfg.dropout_input)))
    for p in plan:
        mods += conv_block(p)
        if p.index == DROPOUT_AFTER and cfg.dropout > 0:
            mods.append((f"drop{p.index}", nn.Dropout(cfg.dropout)))
    net = PaperNet("allcnn_b", plan, nn.Sequential(OrderedDict(mods)), GlobalAvgPool(), num_classes)
    init_convs_(net, cfg.init, cfg.init_scale)
    return net
