"""ConvPool-CNN-C (Springenberg et al. 2014), the Table 1 family.

Layer list per docs/recipes.md ([BASE-RECALL: Springenberg Table 2]; parameter count 1.370M vs the paper's 1.4M):
conv1-3 3x3/96, maxpool 3/2, conv4-6 3x3/192, maxpool 3/2, conv7 3x3/192 (unpadded -> 6x6), conv8 1x1/192,
conv9 1x1/#classes (the classifier conv, ReLU as in Springenberg), global average pool.

INFERRED choices (docs/recipes.md), all knobs:
* max-pool 3/2 with ``ceil_mode=True`` (Caffe rounding) so 32 -> 16 -> 8;
* dropout 0.2 on the input and 0.5 after each max-pool (Springenberg's rates; the paper tuned per row, values
  unknown);
* CReLU/AVR rows put the activation on conv1..conv8, never on the classifier conv9 (forced by the counts);
* He-normal (fan-in) init at half the variance (``init_scale=0.5``: the max-pools grow activations under plain
  He, see :func:`crelu.models.base.init_convs_`), zero biases.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from crelu.models.base import GlobalAvgPool, PaperNet, conv_block, init_convs_
from crelu.models.plan import ConvSpec, plan_from_config

CONVPOOL_C = [
    ConvSpec(1, 3, 1, 1, 96),
    ConvSpec(2, 3, 1, 1, 96),
    ConvSpec(3, 3, 1, 1, 96),
    ConvSpec(4, 3, 1, 1, 192),
    ConvSpec(5, 3, 1, 1, 192),
    ConvSpec(6, 3, 1, 1, 192),
    ConvSpec(7, 3, 1, 0, 192),
    ConvSpec(8, 1, 1, 0, 192),
    ConvSpec(9, 1, 1, 0, 0, classifier=True),
]
POOL_AFTER = (3, 6)


def build_convpool_c(cfg, num_classes: int) -> PaperNet:
    plan = plan_from_config("convpool_c", CONVPOOL_C, cfg, num_classes)
    mods: list[tuple[str, nn.Module]] = []
    if cfg.dropout_input > 0:
        mods.append(("drop_input", nn.Dropout(cfg.dropout_input)))
    for p in plan:
        mods += conv_block(p)
        if p.index in POOL_AFTER:
            j = POOL_AFTER.index(p.index) + 1
            mods.append((f"pool{j}", nn.MaxPool2d(3, 2, ceil_mode=True)))
            if cfg.dropout > 0:
                mods.append((f"drop_pool{j}", nn.Dropout(cfg.dropout)))
    net = PaperNet("convpool_c", plan, nn.Sequential(OrderedDict(mods)), GlobalAvgPool(), num_classes)
    init_convs_(net, cfg.init, cfg.init_scale)
    return net
