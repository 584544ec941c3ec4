"""VGG with BatchNorm and dropout from ``szagoruyko/cifar.torch`` (``models/vgg_bn_drop.lua``), the Table 2 family.

Layer list per docs/recipes.md ([BASE-CODE]): 13 ConvBNReLU blocks (3x3, pad 1, BN eps 1e-3) with 2x2 max-pools
after conv2, 4, 7, 10, 13; dropout 0.3 after conv1 and 0.4 after conv3, 5, 6, 8, 9, 11, 12; classifier
Dropout(0.5) -> Linear(512, 512) -> BN1d -> ReLU -> Dropout(0.5) -> Linear(512, #classes).  Conv init is
cifar.torch's MSR fan-out normal, Linear layers keep the default (= Torch7's U(+-1/sqrt(fan_in))).

CReLU rows (conv1 / conv1,3 / conv1,3,5) halve those layers' filters [PAPER]; the block order
``conv(F/2) -> BN(F/2) -> CReLU -> Dropout`` is INFERRED (``model.bn_position=pre_act``; ``post_act`` is the
alternative conv -> CReLU -> BN(F)).  The Linear layer adapts to the channels conv13 emits.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from crelu.models.base import PaperNet, conv_block, init_convs_
from crelu.models.plan import ConvSpec, plan_from_config

_FILTERS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
VGG16 = [ConvSpec(i, 3, 1, 1, f) for i, f in enumerate(_FILTERS, 1)]
POOL_AFTER = (2, 4, 7, 10, 13)
NO_DROPOUT_AFTER = POOL_AFTER  # cifar.torch: blocks right before a pool have no dropout


def build_vgg(cfg, num_classes: int) -> PaperNet:
    plan = plan_from_config("vgg", VGG16, cfg, num_classes)
    mods: list[tuple[str, nn.Module]] = []
    if cfg.dropout_input > 0:
        mods.append(("drop_input", nn.Dropout(cfg.dropout_input)))
    for p in plan:
        mods += conv_block(p, batchnorm=True, bn_eps=cfg.bn_eps, bn_position=cfg.bn_position)
        if p.index in POOL_AFTER:
            mods.append((f"pool{POOL_AFTER.index(p.index) + 1}", nn.MaxPool2d(2, 2, ceil_mode=True)))
        else:
            rate = cfg.dropout_first if p.index == 1 else cfg.dropout
            if rate > 0:
                mods.append((f"drop{p.index}", nn.Dropout(rate)))
    width = plan[-1].out_channels
    head = nn.Sequential(
        nn.Flatten(),
        nn.Dropout(cfg.dropout_fc),
        nn.Linear(width, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Dropout(cfg.dropout_fc),
        nn.Linear(512, num_classes),
    )
    net = PaperNet("vgg", plan, nn.Sequential(OrderedDict(mods)), head, num_classes)
    init_convs_(net, cfg.init, cfg.init_scale)
    return net
