#!/usr/bin/env python
"""Signal propagation at initialisation: the evidence behind each family's ``model.init_scale`` default.

For an experiment row and a few init scales it builds the full-width model, pushes one batch of unit-variance
inputs through it (train mode off: no dropout) and reports, per conv layer, the RMS of its activation output and,
after a cross-entropy backward pass on random labels, the gradient norm of conv1's weights and the logits' RMS.

    python scripts/init_probe.py experiment=table4/baseline --scales 1.0 0.5 --size 227 --batch 4
    python scripts/init_probe.py experiment=table1/crelu --scales 1.0 0.5

Writes a markdown table to stdout (and ``--out FILE``).  CPU is enough: nothing here is a speed figure.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from crelu.config import compose_config
from crelu.models import build_model


def probe(overrides: list[str], scale: float, size: int | None, batch: int, seed: int) -> dict:
    cfg = compose_config([*overrides, f"model.init_scale={scale}"])
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.dataset.num_classes).eval()
    size = size or cfg.dataset.image_size
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
    y = torch.randint(0, cfg.dataset.num_classes, (batch,), generator=torch.Generator().manual_seed(seed + 2))
    rms: list[tuple[str, float]] = []
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: rms.append((n, out.pow(2).mean().sqrt().item())))
             for n, m in convs]
    logits = model(x)
    for h in hooks:
        h.remove()
    loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    first = convs[0][1].weight.grad
    return {"scale": scale, "rms": rms, "logits_rms": logits.pow(2).mean().sqrt().item(), "loss": loss.item(),
            "conv1_grad": first.norm().item() if first is not None else math.nan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="+", help="Hydra overrides, e.g. experiment=table4/baseline")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5])
    ap.add_argument("--size", type=int, default=None, help="input size (default: the dataset's)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    results = [probe(a.overrides, s, a.size, a.batch, a.seed) for s in a.scales]
    names = [n for n, _ in results[0]["rms"]]
    head = " | ".join(f"init_scale={r['scale']:g}" for r in results)
    lines = [f"Init probe: {' '.join(a.overrides)}, input {a.size or 'dataset size'} px, batch {a.batch}, "
             f"seed {a.seed} (unit-variance inputs, eval mode)", "",
             f"| layer (RMS of the conv output) | {head} |", "|---|" + "---|" * len(results)]
    for i, n in enumerate(names):
        lines.append(f"| {n} | " + " | ".join(f"{r['rms'][i][1]:.4g}" for r in results) + " |")
    lines.append("| logits RMS | " + " | ".join(f"{r['logits_rms']:.4g}" for r in results) + " |")
    lines.append("| cross-entropy | " + " | ".join(f"{r['loss']:.4g}" for r in results) + " |")
    lines.append("| conv1 weight-gradient norm | " + " | ".join(f"{r['conv1_grad']:.4g}" for r in results) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
