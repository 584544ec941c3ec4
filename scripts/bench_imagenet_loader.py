#!/usr/bin/env python
"""Throughput of the ImageNet input pipeline alone and of All-CNN-B training on it (a benchmark, not a test).

    python scripts/bench_imagenet_loader.py [--root DIR] [--workers 0,2,8] [--batch-size 64] [--steps 20]
        [--decode cpu|gpu] [--width-scale 1.0] [--train-steps 5] [--out results/bench/imagenet_loader.json]

Without ``--root`` (and without ``$CRELU_IMAGENET_ROOT``) it generates an ImageNet-like folder of JPEGs whose
shorter side is ``--gen-size`` (default 375, about the ILSVRC-2012 median) in a temporary directory, so the
decode + resize cost is realistic even without the data.  For each worker count it reports images/s of

* ``loader``: :class:`crelu.data.imagenet.LoaderBatches` yielding normalised, augmented batches on the device
  (decode, resize, crop, flip, PCA lighting, host-to-device copy), no model;
* ``train``: the same batches through ``crelu.training.engine.train_epoch`` with the Table 4 baseline
  All-CNN-B (SGD step included; bf16 autocast and channels-last on CUDA as in training).

The JSON records the device name, CPU count and library versions.  On CUDA at full width and 227 px the train row
is also written as ``{"family": "allcnn_b", "variant": "suite", "tflops": ...}``, which
``scripts/plan_sweep.py`` uses for its GPU-hours estimate.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import PIL
import torch
import torchvision

from crelu.config import compose_config
from crelu.data.imagenet import build_imagenet, use_device_decode
from crelu.models import build_model
from crelu.models.flops import train_step_flops
from crelu.training import environment as env
from crelu.training.engine import train_epoch
from crelu.training.optim import build_optimizer

HERE = Path(__file__).resolve().parent


def generate(out: Path, classes: int, per_class: int, size: int) -> Path:
    spec = importlib.util.spec_from_file_location("make_tiny_imagenet", HERE / "make_tiny_imagenet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_tiny_imagenet(out, classes, per_class, max(1, per_class // 8), size)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cfg_for(a, root: Path, workers: int, classes: int):
    return compose_config([
        "experiment=table4/baseline", f"dataset.root={root}", f"dataset.workers={workers}",
        f"dataset.num_classes={classes}", f"dataset.image_size={a.image_size}", f"dataset.resize={a.resize}",
        f"train.batch_size={a.batch_size}", f"model.width_scale={a.width_scale}", "train.quiet=true",
        f"train.device={a.device}",
    ])


def bench_loader(bundle, device, steps: int) -> dict:
    gen = env.data_generator(0)
    it = bundle.train.epoch(gen, max_steps=steps + 1)
    next(it)  # worker start-up and the first batch are not counted
    sync(device)
    t0, n = time.perf_counter(), 0
    for x, _ in it:
        n += x.shape[0]
    sync(device)
    dt = time.perf_counter() - t0
    return {"images": n, "seconds": dt, "images_per_s": n / dt}


def bench_train(cfg, bundle, device, steps: int, channels_last: bool) -> dict:
    env.seed_everything(0, False)
    model = build_model(cfg.model, cfg.dataset.num_classes).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(cfg.optim, model.parameters())
    amp = env.autocast_dtype("auto", device)
    gen = env.data_generator(0)
    train_epoch(model, opt, bundle.train, gen=gen, device=device, amp_dtype=amp, max_steps=1, quiet=True)  # warm-up
    stats = train_epoch(model, opt, bundle.train, gen=gen, device=device, amp_dtype=amp, max_steps=steps, quiet=True)
    flops = train_step_flops(build_model(cfg.model, cfg.dataset.num_classes), cfg.dataset.image_size)
    return {"images": stats.examples, "seconds": stats.time_s, "images_per_s": stats.images_per_s,
            "train_step_gflop_per_image": flops / 1e9, "tflops": flops * stats.images_per_s / 1e12}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.environ.get("CRELU_IMAGENET_ROOT"))
    p.add_argument("--workers", default="0,2", help="comma list of DataLoader worker counts")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="loader batches timed per worker count")
    p.add_argument("--train-steps", type=int, default=3, help="training steps timed (0: skip training)")
    p.add_argument("--image-size", type=int, default=227)
    p.add_argument("--resize", type=int, default=256)
    p.add_argument("--width-scale", type=float, default=1.0)
    p.add_argument("--decode", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--device", default="auto")
    p.add_argument("--gen-classes", type=int, default=8)
    p.add_argument("--gen-per-class", type=int, default=96)
    p.add_argument("--gen-size", type=int, default=375)
    p.add_argument("--out", default="results/bench/imagenet_loader.json")
    a = p.parse_args()
    os.environ["CRELU_IMAGENET_DECODE"] = a.decode
    tmp = None
    if a.root:
        root = Path(a.root)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="crelu_bench_imagenet_")
        root = generate(Path(tmp.name), a.gen_classes, a.gen_per_class, a.gen_size)
        print(f"generated {a.gen_classes * a.gen_per_class} training JPEGs (shorter side {a.gen_size}) in {root}")
    classes = len([d for d in (root / "train").iterdir() if d.is_dir()])
    device = env.select_device(a.device)
    channels_last = env.use_channels_last("auto", device)
    rows = []
    for w in (int(v) for v in a.workers.split(",")):
        cfg = cfg_for(a, root, w, classes)
        bundle = build_imagenet(cfg, device, channels_last)
        decode = "gpu" if use_device_decode(cfg, device) else "cpu"
        steps = min(a.steps, len(bundle.train) - 1)
        row = {"workers": w, "decode": decode, "batch_size": a.batch_size, **bench_loader(bundle, device, steps)}
        rows.append({"what": "loader", **row})
        print(f"loader  workers={w} decode={decode}: {row['images_per_s']:.1f} images/s", flush=True)
        if a.train_steps > 0:
            tr = bench_train(cfg, bundle, device, min(a.train_steps, len(bundle.train)), channels_last)
            rows.append({"what": "train", "workers": w, "decode": decode, "batch_size": a.batch_size,
                         "width_scale": a.width_scale, **tr})
            print(f"train   workers={w} decode={decode}: {tr['images_per_s']:.1f} images/s "
                  f"({tr['tflops']:.3f} TFLOP/s achieved)", flush=True)
            if device.type == "cuda" and a.width_scale == 1.0 and a.image_size == 227:
                rows.append({"family": "allcnn_b", "variant": "suite", "tflops": tr["tflops"], "workers": w})
        del bundle
    out = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "pillow": PIL.__version__},
        "data": {"root": str(root) if tmp is None else f"generated ({a.gen_size} px shorter side)",
                 "classes": classes, "image_size": a.image_size, "resize": a.resize},
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": rows,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
