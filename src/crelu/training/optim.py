"""Optimiser and learning-rate schedules of docs/recipes.md, as pure functions of the epoch.

* ``multistep`` (ConvPool-CNN-C, Springenberg): lr0 * gamma^(number of milestones <= epoch).
* ``step`` (VGG cifar.torch, ImageNet INFERRED): lr0 * gamma^((epoch + index_base) // step_size).  With
  ``index_base=1`` this is cifar.torch's rule "halve when epoch % 25 == 0" on 1-indexed epochs.
* ``constant``.

The schedule is derived from the epoch index, so a resumed run needs no scheduler state.
"""

from __future__ import annotations

import bisect

import torch


def lr_at(schedule, lr0: float, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``."""
    if schedule.name == "multistep":
        return lr0 * schedule.gamma ** bisect.bisect_right(sorted(schedule.milestones), epoch)
    if schedule.name == "step":
        if schedule.step_size <= 0:
            raise ValueError("schedule.step_size must be positive")
        return lr0 * schedule.gamma ** ((epoch + schedule.index_base) // schedule.step_size)
    if schedule.name == "constant":
        return lr0
    raise ValueError(f"unknown schedule {schedule.name!r}; use multistep, step or constant")


def build_optimizer(optim_cfg, params) -> torch.optim.Optimizer:
    """SGD with momentum, dampening and L2 weight decay on every parameter (biases and BN too, as the recipes)."""
    if optim_cfg.name != "sgd":
        raise ValueError(f"unknown optimizer {optim_cfg.name!r}; the paper's recipes all use sgd")
    return torch.optim.SGD(
        params,
        lr=optim_cfg.lr,
        momentum=optim_cfg.momentum,
        dampening=optim_cfg.dampening,
        weight_decay=optim_cfg.weight_decay,
        nesterov=optim_cfg.nesterov,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
