"""FLOPs counted from the model (PyTorch's FlopCounterMode on a real forward), never guessed."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def forward_flops(model: torch.nn.Module, image_size: int, channels: int = 3) -> int:
    """FLOPs (multiply-adds count 2) of one forward pass of one image in eval mode."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, channels, image_size, image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def train_step_flops(model: torch.nn.Module, image_size: int, batch: int = 2) -> int:
    """FLOPs of forward + backward *per image* (counted on ``batch`` >= 2 images, as BatchNorm needs, not the
    3x rule of thumb)."""
    x = torch.zeros(batch, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops()) // batch
