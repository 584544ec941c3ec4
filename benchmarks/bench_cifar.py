#!/usr/bin/env python
"""CIFAR training throughput: the suite's hot loop vs a plain reference loop, and K packed models vs K in a row.

    python benchmarks/bench_cifar.py                    # CUDA: full-width models, batch 128 (make bench)
    python benchmarks/bench_cifar.py --device cpu       # CPU: small settings (width 1/8, batch 32, 8 steps), ~1 min
    python benchmarks/bench_cifar.py --pack 5 --compile --models vgg:baseline --peak-tflops 989

For each model (ConvPool-CNN-C baseline and CReLU, VGG baseline and CReLU conv1,3,5) it measures images/s of

* ``suite``: :func:`crelu.training.engine.train_epoch` on device-resident batches (:class:`TensorBatches`, the
  recipe's flips/shifts), bf16 autocast and channels_last on CUDA (``train.amp``/``channels_last`` = auto),
  cudnn.benchmark, optionally ``torch.compile`` -- exactly what ``crelu.training.train`` runs;
* ``reference``: a plain torchvision-style loop: ``DataLoader`` over uint8 images with per-sample PIL transforms
  (RandomCrop/RandomHorizontalFlip/ToTensor/Normalize), fp32, contiguous NCHW, ``loss.item()`` every step;
* ``packed``: K models as one :class:`~crelu.models.packed.PackedNet` (``protocol.pack=K``), each on its own
  batches, through the same epoch loop (:class:`crelu.training.packed.PackedStep`);
* ``sequential``: the same K models trained one after another with the suite loop.

TFLOP/s = images/s x training FLOPs per image, counted by PyTorch's FlopCounterMode on the model itself
(:func:`crelu.models.flops.train_step_flops`: convolutions and matmuls, forward + backward).  MFU = TFLOP/s /
the device's dense bf16 peak (table below, ``--peak-tflops``, or with ``--measure-peak`` the bf16 matmul rate
measured in the same run); the fp32 reference rows are divided by the same bf16 peak.  Without a known peak
(CPU) MFU is n/a.  The results go atomically to ``--out`` (``results/bench/cifar.json``);
``scripts/plan_sweep.py`` reads its ``suite`` rows for GPU-hour estimates, so keep CPU or shrunken
(``--width-scale``) runs out of results/bench (``--out``) unless that is what you want.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from crelu.config import compose_config
from crelu.data.tensor_loader import TensorBatches
from crelu.models import build_model
from crelu.models.flops import train_step_flops
from crelu.models.packed import PackedNet
from crelu.results.io import atomic_write_json
from crelu.training import engine
from crelu.training import environment as env
from crelu.training.optim import build_optimizer

MODELS = {  # (family, row) -> experiment config
    ("convpool_c", "baseline"): "table1/baseline",
    ("convpool_c", "crelu"): "table1/crelu",
    ("vgg", "baseline"): "table2/vgg",
    ("vgg", "crelu_conv1_3_5"): "table2/crelu_conv1_3_5",
}
# Dense bf16 peak TFLOP/s (vendor datasheets, no sparsity).  Matched in order against the device name.
PEAK_TFLOPS = [("h100 pcie", 756.0), ("h100", 989.0), ("h200", 989.0), ("a100", 312.0)]
CPU_DEFAULTS = dict(batch=32, steps=8, warmup=2, width_scale=0.125, pack=2, repeats=3)
CUDA_DEFAULTS = dict(batch=128, steps=100, warmup=20, width_scale=1.0, pack=4, repeats=3)
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def peak_tflops(device_name: str) -> float | None:
    name = device_name.lower()
    return next((v for key, v in PEAK_TFLOPS if key in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def suite_epoch(model, optimizer, batches, *, gen, device, amp_dtype, **kw):
    """One epoch of the suite's training loop (:func:`crelu.training.engine.train_epoch`) for one model.

    The loop takes a step adapter (:class:`~crelu.training.engine.ModelStep`); older versions of the suite took
    the model, optimiser and batches directly.  Returns the epoch's :class:`EpochStats`.
    """
    if hasattr(engine, "ModelStep"):
        step = engine.ModelStep(model, optimizer, batches, gen, device=device, amp_dtype=amp_dtype)
        return engine.train_epoch(step, **kw)[0]
    return engine.train_epoch(model, optimizer, batches, gen=gen, device=device, amp_dtype=amp_dtype, **kw)


def packed_epoch(model, optimizer, batches: list, gens: list, *, device, amp_dtype, **kw) -> list:
    """One epoch of K packed models (``protocol.pack``) through the suite's loop; one EpochStats per member."""
    from crelu.training import packed

    if hasattr(packed, "PackedStep"):
        step = packed.PackedStep(model, optimizer, batches, gens, device=device, amp_dtype=amp_dtype)
        return engine.train_epoch(step, **kw)
    return packed.train_epoch_packed(model, optimizer, batches, gens, device=device, amp_dtype=amp_dtype, **kw)


def _compiled(model, args):
    """``torch.compile(model)`` when ``--compile`` (``--compile-backend eager``: Dynamo only, no code generation)."""
    if not args.compile:
        return model
    return torch.compile(model, backend=getattr(args, "compile_backend", None) or "inductor")


def measure_matmul_tflops(device: torch.device, n: int | None = None, reps: int = 10, warmup: int = 3,
                          dtype: torch.dtype | None = None) -> dict:
    """The device's achieved dense matmul rate, measured: median of ``reps`` timed ``n x n x n`` products.

    CUDA: bf16, n=8192, timed with CUDA events, on random inputs (two input sets alternate, so no product reads
    the previous one's operands from L2).  CPU: float32 (CPU bf16 matmuls are often emulated), n=512, host clock.
    """
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 512)
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    g = torch.Generator(device=device).manual_seed(0)
    pairs = [(torch.randn(n, n, device=device, dtype=dtype, generator=g),
              torch.randn(n, n, device=device, dtype=dtype, generator=g)) for _ in range(2)]
    for i in range(warmup):
        a, b = pairs[i % 2]
        a @ b
    _sync(device)
    times = []
    for i in range(reps):
        a, b = pairs[i % 2]
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"tflops": 2 * n**3 / t / 1e12, "n": n, "dtype": str(dtype).replace("torch.", ""), "reps": reps,
            "median_s": t, "min_s": min(times), "max_s": max(times)}


class _Setup:
    def __init__(self, args, device: torch.device, cfg) -> None:
        self.args, self.device, self.cfg = args, device, cfg
        self.amp = env.autocast_dtype(args.amp, device)
        self.channels_last = env.use_channels_last(args.channels_last, device)

    def model(self, seed: int, suite: bool = True):
        torch.manual_seed(seed)
        m = build_model(self.cfg.model, self.cfg.dataset.num_classes).to(self.device)
        return m.to(memory_format=torch.channels_last) if suite and self.channels_last else m

    def batches(self, seed: int) -> TensorBatches:
        n = self.args.batch * max(self.args.steps, self.args.warmup)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 3, 32, 32, generator=g).to(self.device)
        y = torch.randint(0, self.cfg.dataset.num_classes, (n,), generator=g).to(self.device)
        d = self.cfg.dataset
        return TensorBatches(x, y, batch_size=self.args.batch, flip=d.flip, shift=d.shift,
                             channels_last=self.channels_last)


def bench_suite(s: _Setup, seed: int = 0, model=None) -> float:
    """images/s of the suite's training step (after a warm-up epoch); median over --repeats."""
    model = model or s.model(seed)
    opt = build_optimizer(s.cfg.optim, model.parameters())
    step_model = _compiled(model, s.args)
    data, gen = s.batches(seed), torch.Generator().manual_seed(seed)
    kw = dict(gen=gen, device=s.device, amp_dtype=s.amp, quiet=True)
    suite_epoch(step_model, opt, data, max_steps=s.args.warmup, **kw)
    return statistics.median(suite_epoch(step_model, opt, data, max_steps=s.args.steps, **kw).images_per_s
                             for _ in range(s.args.repeats))


def bench_sequential(s: _Setup, k: int) -> float:
    """K separate models trained one after another (the suite loop each): total images / total time."""
    models = [s.model(seed) for seed in range(k)]
    times = [s.args.batch * s.args.steps / bench_suite(s, seed, m) for seed, m in enumerate(models)]
    return k * s.args.batch * s.args.steps / sum(times)


def bench_packed(s: _Setup, k: int) -> float:
    net = PackedNet([s.model(seed, suite=False) for seed in range(k)])
    if s.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = build_optimizer(s.cfg.optim, net.parameters())
    step_model = _compiled(net, s.args)
    data = [s.batches(seed) for seed in range(k)]
    gens = [torch.Generator().manual_seed(seed) for seed in range(k)]
    kw = dict(device=s.device, amp_dtype=s.amp, quiet=True)
    packed_epoch(step_model, opt, data, gens, max_steps=s.args.warmup, **kw)
    rates = []
    for _ in range(s.args.repeats):
        stats = packed_epoch(step_model, opt, data, gens, max_steps=s.args.steps, **kw)
        rates.append(sum(st.examples for st in stats) / stats[0].time_s)
    return statistics.median(rates)


class _UInt8Images(torch.utils.data.Dataset):
    """uint8 HWC images with per-sample PIL transforms, as torchvision's CIFAR10 dataset serves them."""

    def __init__(self, n: int, num_classes: int, transform) -> None:
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        self.labels = rng.integers(0, num_classes, size=n)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def bench_reference(s: _Setup) -> float:
    """A plain loop: DataLoader + per-sample transforms, fp32, NCHW, a host sync (loss.item()) every step."""
    import torchvision.transforms as T

    a, d = s.args, s.cfg.dataset
    aug = ([T.RandomCrop(32, padding=d.shift)] if d.shift else []) + ([T.RandomHorizontalFlip()] if d.flip else [])
    ds = _UInt8Images(a.batch * (a.warmup + a.steps * a.repeats), d.num_classes,
                      T.Compose([*aug, T.ToTensor(), T.Normalize(MEAN, STD)]))
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, drop_last=True,
                                         num_workers=a.ref_workers, pin_memory=s.device.type == "cuda")
    model = s.model(0, suite=False)
    opt = build_optimizer(s.cfg.optim, model.parameters())
    model.train()
    it, running, rates = iter(loader), 0.0, []
    for phase, steps in [("warmup", a.warmup)] + [("timed", a.steps)] * a.repeats:
        _sync(s.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            x, y = next(it)
            x, y = x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item()
        _sync(s.device)
        if phase == "timed":
            rates.append(a.batch * steps / (time.perf_counter() - t0))
    return statistics.median(rates)


def _row(family, row, variant, ips, flops_per_image, peak, **extra) -> dict:
    tflops = ips * flops_per_image / 1e12
    return {"family": family, "row": row, "variant": variant, "images_per_s": ips, "tflops": tflops,
            "mfu": tflops / peak if peak else None, "flops_per_image": flops_per_image, **extra}


def run(args) -> dict:
    device = env.select_device(args.device)
    defaults = CUDA_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.ref_workers is None:
        args.ref_workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    if args.threads:
        torch.set_num_threads(args.threads)
    env.seed_everything(0, deterministic=False)  # cudnn.benchmark on, as in training
    name = env.describe_device(device)["device_name"]
    measured = measure_matmul_tflops(device) if args.measure_peak else None
    peak = args.peak_tflops or (measured["tflops"] if measured and device.type == "cuda" else peak_tflops(name))
    wanted = [tuple(m.split(":")) for m in args.models.split(",")] if args.models else list(MODELS)
    rows = []
    for family, row in wanted:
        if (family, row) not in MODELS:
            raise SystemExit(f"unknown model {family}:{row}; choose from {[f'{f}:{r}' for f, r in MODELS]}")
        cfg = compose_config([f"experiment={MODELS[family, row]}", f"model.width_scale={args.width_scale}"])
        fpi = train_step_flops(build_model(cfg.model, cfg.dataset.num_classes), 32, batch=2) / 2
        s = _Setup(args, device, cfg)
        suite, ref = bench_suite(s), bench_reference(s)
        rows.append(_row(family, row, "suite", suite, fpi, peak, ratio=suite / ref, ratio_to="reference"))
        rows.append(_row(family, row, "reference", ref, fpi, peak))
        if args.pack > 1:
            packed, seq = bench_packed(s, args.pack), bench_sequential(s, args.pack)
            rows.append(_row(family, row, "packed", packed, fpi, peak, k=args.pack, ratio=packed / seq,
                             ratio_to="sequential"))
            rows.append(_row(family, row, "sequential", seq, fpi, peak, k=args.pack))
        print(f"  measured {family}:{row}", file=sys.stderr, flush=True)
    s0 = _Setup(args, device, cfg)
    return {
        "device": name, "device_type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "peak_tflops": peak, "peak_note": "dense bf16 peak; MFU of fp32 rows uses the same peak",
        "measured_matmul": measured,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"batch": args.batch, "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
                     "width_scale": args.width_scale, "pack": args.pack, "compile": args.compile,
                     "compile_backend": args.compile_backend if args.compile else None,
                     "amp": str(s0.amp).replace("torch.", "") if s0.amp else "fp32",
                     "channels_last": s0.channels_last, "ref_workers": args.ref_workers,
                     "threads": torch.get_num_threads()},
        "results": rows,
    }


def format_table(out: dict) -> str:
    st = out["settings"]
    peak = f"{out['peak_tflops']:.0f} TFLOP/s" if out["peak_tflops"] else "unknown (MFU n/a)"
    lines = [f"device: {out['device']} | torch {out['torch']} cuda {out['cuda']} | peak {peak}",
             f"batch {st['batch']}, {st['steps']} timed steps x {st['repeats']} (median), width x{st['width_scale']}, "
             f"suite {st['amp']}{' + channels_last' if st['channels_last'] else ''}"
             f"{' + compile' if st['compile'] else ''}, K={st['pack']}",
             f"{'family':<11}{'row':<17}{'variant':<11}{'img/s':>10}{'TFLOP/s':>10}{'MFU':>8}  ratio"]
    for r in out["results"]:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        ratio = f"{r['ratio']:.2f}x vs {r['ratio_to']}" if "ratio" in r else ""
        lines.append(f"{r['family']:<11}{r['row']:<17}{r['variant']:<11}{r['images_per_s']:>10,.0f}"
                     f"{r['tflops']:>10.3f}{mfu:>8}  {ratio}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--models", default=None, help="comma list of family:row (default: all four)")
    p.add_argument("--batch", type=int, default=None, help="per-model batch (CUDA 128, CPU 32)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per repeat (CUDA 100, CPU 8)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (CUDA 20, CPU 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats, median reported (CUDA 3, CPU 3)")
    p.add_argument("--width-scale", type=float, default=None, help="model.width_scale (CUDA 1, CPU 0.125)")
    p.add_argument("--pack", type=int, default=None, help="K for packed vs sequential; 1 skips (CUDA 4, CPU 2)")
    p.add_argument("--amp", default="auto", help="suite precision: auto (bf16 on CUDA) | bf16 | off")
    p.add_argument("--channels-last", default="auto", help="suite memory format: auto (on CUDA) | on | off")
    p.add_argument("--compile", action="store_true", help="torch.compile the suite and packed models")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: Dynamo only)")
    p.add_argument("--ref-workers", type=int, default=None, help="reference DataLoader workers (CUDA 8, CPU 0)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s for MFU (default: known devices)")
    p.add_argument("--measure-peak", action="store_true",
                   help="measure the bf16 matmul rate first; on CUDA it is the MFU peak (unless --peak-tflops)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="results/bench/cifar.json")
    args = p.parse_args(argv)
    out = run(args)
    atomic_write_json(Path(args.out), out)
    print(format_table(out))
    print(f"wrote {args.out}")
    bad = [r for r in out["results"] if not math.isfinite(r["images_per_s"])]
    if bad:
        raise SystemExit(f"non-finite throughput in {len(bad)} row(s)")
    return out


if __name__ == "__main__":
    main()
