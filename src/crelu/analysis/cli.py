"""``python -m crelu.analysis {pairing,invariance,reconstruction,table6,all}``: figures and numbers from runs.

Finds the trained networks by run-record meta under ``--runs`` (see :mod:`crelu.analysis.jobs` for which
table/row feeds which analysis), writes PNG + PDF figures under ``--out`` and CSV/JSON/Markdown numbers under
``--results``, and prints every path it wrote.  A part whose run or data is missing prints one
``skipped: ...`` line instead of failing.  ``pairing --torchvision NAME`` analyses one torchvision classification
network instead of the runs (see :mod:`crelu.analysis.torchvision_models` for ``--weights``).  Exit status: 0 when
at least one analysis wrote something, 1 with a message when nothing could run (or a network or its weights
cannot be loaded: one line), 2 for bad arguments.

Examples::

    python -m crelu.analysis all --runs results/runs --out results/figures
    python -m crelu.analysis pairing --alexnet /path/to/alexnet-owt.pth
    python -m crelu.analysis pairing --torchvision resnet18                       # torchvision's random init
    python -m crelu.analysis pairing --torchvision resnet50 --weights DEFAULT     # torchvision's weights API
    python -m crelu.analysis pairing --torchvision resnet18 --weights my_resnet18.pth --num-classes 10
    python -m crelu.analysis invariance --inv-images 2000 --inv-top 50 --families translation
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from crelu.analysis import jobs
from crelu.analysis.pairing import load_alexnet
from crelu.analysis.runs import Context
from crelu.analysis.table6 import NONPAIR_MODES
from crelu.analysis.torchvision_models import ModelLoadError
from crelu.analysis.transforms import FAMILIES

ANALYSES = ("pairing", "invariance", "reconstruction", "table6")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m crelu.analysis", description=__doc__.split("\n")[0])
    p.add_argument("analysis", choices=[*ANALYSES, "all"])
    g = p.add_argument_group("common")
    g.add_argument("--runs", default="results/runs", help="root searched for run.json files")
    g.add_argument("--out", default="results/figures", help="folder for PNG/PDF figures")
    g.add_argument("--results", default="results", help="folder for CSV/JSON/Markdown numbers")
    g.add_argument("--profile", default=None, help="only use runs of this profile (default: prefer 'paper')")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument(
        "--data-root", default=None, help="dataset root (default: the run's dataset.root, env vars)"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of random baselines / random non-pairs")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("pairing (Figs 1-3)")
    g.add_argument("--alexnet", default=None, help="local torchvision AlexNet weights file for Fig. 2")
    g.add_argument("--torchvision", metavar="NAME", default=None,
                   help="analyse this torchvision classification model (resnet18, vgg16, ...) instead of the runs")
    g.add_argument("--weights", default=None,
                   help="with --torchvision: DEFAULT, a weights name (IMAGENET1K_V1), or a state-dict file; "
                        "default: torchvision's random init")
    g.add_argument("--num-classes", type=int, default=None, help="with --torchvision and a weights file")
    g.add_argument("--offline", action="store_true",
                   help="with --weights NAME: only torchvision's cache ($TORCH_HOME/hub/checkpoints), no download")
    g.add_argument("--pairing-layers", type=int, nargs="+", default=None,
                   help="with --torchvision: 1-based positions among the conv layers (default all)")
    g = p.add_argument_group("invariance (Fig. 4)")
    g.add_argument("--inv-images", type=int, default=10000, help="held-out images (thresholds and Z)")
    g.add_argument("--inv-top", type=int, default=100, help="|Z|: top-activating images per unit")
    g.add_argument("--inv-batch", type=int, default=512, help="network inputs per forward pass")
    g.add_argument("--inv-layers", type=int, nargs="+", default=None, help="conv indices (default 1..7)")
    g.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    g.add_argument("--max-shift", type=int, default=None, help="px (default: CIFAR 4, ImageNet 16)")
    g.add_argument("--shift-step", type=int, default=2)
    g.add_argument(
        "--no-pool-readout",
        action="store_true",
        help="read conv3/conv6 before the following max-pool (default: after it, INFERRED)",
    )
    g = p.add_argument_group("reconstruction (Fig. 5)")
    g.add_argument("--recon-images", type=int, default=2, help="held-out images to reconstruct")
    g.add_argument(
        "--recon-layers",
        type=int,
        nargs="+",
        default=None,
        help="conv indices (default: ImageNet 1-4, CIFAR 1-3)",
    )
    g.add_argument("--cg-iters", type=int, default=300, help="max conjugate-gradient iterations per layer")
    g = p.add_argument_group("table6")
    g.add_argument("--nonpair", choices=NONPAIR_MODES, default="all")
    g.add_argument("--paper-table6", default=None, help="paper values (default: the repo's results/paper_table6.csv)")
    return p


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = Context(
        runs=Path(args.runs),
        out=Path(args.out),
        results=Path(args.results),
        profile=args.profile,
        device=_device(args.device),
        data_root=args.data_root,
        seed=args.seed,
        progress=not args.no_progress,
    )
    if (args.weights or args.num_classes or args.offline or args.pairing_layers) and not args.torchvision:
        print("error: --weights, --num-classes, --offline and --pairing-layers need --torchvision NAME",
              file=sys.stderr)
        return 2
    if args.torchvision or args.alexnet:
        if args.torchvision and args.analysis != "pairing":
            print("error: --torchvision works with the pairing analysis only", file=sys.stderr)
            return 2
        try:
            if args.torchvision:
                jobs.run_pairing_torchvision(ctx, args.torchvision, args.weights, num_classes=args.num_classes,
                                             offline=args.offline, layers=args.pairing_layers)
                print(f"done: pairing of {args.torchvision}; wrote {len(ctx.written)} files")
                return 0
            load_alexnet(args.alexnet)  # fail early, in one line, on a bad file
        except (ModelLoadError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    todo = ANALYSES if args.analysis == "all" else (args.analysis,)
    ran = []
    for name in todo:
        print(f"== {name}", flush=True)
        if name == "pairing":
            ok = jobs.run_pairing(ctx, alexnet=args.alexnet)
        elif name == "invariance":
            ok = jobs.run_invariance(
                ctx,
                n_images=args.inv_images,
                num_top=args.inv_top,
                batch_size=args.inv_batch,
                families=args.families,
                after_pool=not args.no_pool_readout,
                max_shift=args.max_shift,
                shift_step=args.shift_step,
                layers=args.inv_layers,
            )
        elif name == "reconstruction":
            ok = jobs.run_reconstruction(
                ctx, n_images=args.recon_images, iters=args.cg_iters, layers=args.recon_layers
            )
        else:
            ok = jobs.run_table6(ctx, nonpair=args.nonpair, paper_csv=args.paper_table6)
        if ok:
            ran.append(name)
        else:
            print(f"skipped: {name} (nothing to analyse, see the lines above)")
    if not ran:
        print(
            f"error: nothing could run: no finished run with a checkpoint for {', '.join(todo)} "
            f"under {ctx.runs}",
            file=sys.stderr,
        )
        return 1
    print(f"done: {', '.join(ran)}; wrote {len(ctx.written)} files")
    return 0
