#!/usr/bin/env python
"""Print a table sweep's job list and a GPU-hours estimate instead of running it (``make table1 DRY_RUN=1``).

    python scripts/plan_sweep.py table1 --profile paper [--jobs single,fold0,...] [hydra overrides...]

For each job: its run key, whether a finished/unfinished record is already on disk (finished jobs cost
nothing on relaunch), and its training FLOPs = epochs x images x (forward+backward FLOPs counted by PyTorch's
FlopCounterMode) + evaluation passes.  GPU-hours = FLOPs / achieved throughput: the measured TFLOP/s in
``results/bench/*.json`` for the model family when a benchmark has been run on the target GPU, otherwise the
``--tflops`` assumption (stated in the output).  Single jobs are counted at their upper bound (phase 2 runs its
full schedule).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from crelu.config import compose_config, config_dir
from crelu.config.experiments import register_resolvers
from crelu.data.cifar import DataNotFoundError
from crelu.models import build_model
from crelu.models.flops import forward_flops, train_step_flops
from crelu.protocols.runner import SkippedJob, resolve_job
from crelu.results.record import RecordError, load_record

try:
    from crelu.training.run import resolve_run_dir
except ImportError:  # before the run-lifecycle refactor
    from crelu.training.trainer import resolve_run_dir

TRAIN_SIZE = {"cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167}
TEST_SIZE = {"cifar10": 10_000, "cifar100": 10_000, "imagenet": 50_000}


def measured_tflops(family: str) -> float | None:
    """Achieved TFLOP/s for ``family`` from a GPU benchmark at full width (``make bench``), if one is on disk.

    CPU or reduced-width benchmark files are ignored: they say nothing about GPU-hours.
    """
    best = None
    for path in sorted(Path("results/bench").glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("device_type") != "cuda" or data.get("settings", {}).get("width_scale", 1.0) != 1.0:
            continue
        for row in data.get("results", []):
            if row.get("family") == family and row.get("variant") == "suite" and row.get("tflops"):
                best = float(row["tflops"])
    return best


def sweep_params(table: str) -> dict[str, list[str]]:
    """The table sweep's parameters, resolved as Hydra resolves them (``${crelu_rows:<table>}`` lists the rows)."""
    register_resolvers()
    spec = OmegaConf.create(yaml.safe_load((config_dir() / "table" / f"{table}.yaml").read_text()))
    params = OmegaConf.to_container(spec.hydra.sweeper.params, resolve=True)
    return {k: str(v).split(",") for k, v in params.items()}


_FLOPS: dict[str, tuple[int, int]] = {}


def model_flops(cfg) -> tuple[int, int]:
    """(forward, forward+backward) FLOPs per image, counted once per distinct model."""
    key = json.dumps([OmegaConf.to_container(cfg.model), cfg.dataset.num_classes, cfg.dataset.image_size])
    if key not in _FLOPS:
        model = build_model(cfg.model, cfg.dataset.num_classes)
        _FLOPS[key] = (forward_flops(model, cfg.dataset.image_size), train_step_flops(model, cfg.dataset.image_size))
    return _FLOPS[key]


def job_flops(cfg) -> float:
    fwd, step = model_flops(cfg)
    n_train = cfg.dataset.train_subset or TRAIN_SIZE[cfg.dataset.name]
    n_test = cfg.dataset.test_subset or TEST_SIZE[cfg.dataset.name]
    epochs = cfg.schedule.epochs
    steps = n_train // cfg.train.batch_size
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    per_epoch = steps * cfg.train.batch_size * step + n_test * fwd  # train + per-epoch test pass
    total = epochs * per_epoch + (n_test + n_train) * fwd
    if cfg.protocol.name == "single":
        total *= 2  # two phases (upper bound: phase 2 may stop early)
    elif cfg.protocol.name == "kfold" and cfg.protocol.pack > 1:  # one job trains folds f..f+pack-1
        total *= min(cfg.protocol.pack, cfg.protocol.folds - cfg.protocol.fold)
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table")
    p.add_argument("--profile", default="paper")
    p.add_argument("--jobs", default=None, help="comma list overriding protocol.job (single,fold0,...)")
    p.add_argument("--seeds", type=int, default=None, help="sweep train.seed over 0..S-1 (make ... SEEDS=S)")
    p.add_argument("--tflops", type=float, default=100.0,
                   help="assumed achieved bf16 TFLOP/s when no benchmark is on disk (default 100)")
    p.add_argument("overrides", nargs="*")
    a, extra = p.parse_known_args()
    a.overrides = [*a.overrides, *extra]
    params = sweep_params(a.table)
    if a.jobs:
        params["protocol.job"] = a.jobs.split(",")
    if a.seeds:
        params["train.seed"] = [str(s) for s in range(a.seeds)]
    keys = list(params)
    total_h, counts = 0.0, {"finished": 0, "unfinished": 0, "new": 0}
    sources = set()
    print(f"{'job':>4}  {'status':<10} {'GFLOP':>12} {'GPU-h':>7}  run key")
    for i, combo in enumerate(itertools.product(*(params[k] for k in keys))):
        over = [f"{k}={v}" for k, v in zip(keys, combo)] + [f"profile={a.profile}", *a.overrides]
        try:
            cfg = resolve_job(compose_config(over))
        except SkippedJob:
            continue
        try:
            run_dir, key = resolve_run_dir(cfg)
        except DataNotFoundError:  # the run key holds the data's fingerprint: unknown without the data
            run_dir = None
            key = (f"{cfg.experiment.table}/{cfg.experiment.row}/{cfg.dataset.name}/{cfg.protocol.name}"
                   f"{'' if cfg.protocol.fold is None else '-' + str(cfg.protocol.fold)}/seed{cfg.train.seed} "
                   "(data not found here: run key and status unknown, counted as new)")
        try:
            status = "finished" if run_dir and load_record(run_dir).status == "finished" else (
                "unfinished" if run_dir else "new")
        except RecordError:
            status = "new"
        counts[status] += 1
        flops = job_flops(cfg)
        tflops = measured_tflops(cfg.model.family)
        rate = f"measured {tflops:.1f}" if tflops else f"assumed {a.tflops:.0f}"
        sources.add(f"{cfg.model.family}: {rate} TFLOP/s")
        hours = 0.0 if status == "finished" else flops / ((tflops or a.tflops) * 1e12) / 3600
        total_h += hours
        print(f"{i:>4}  {status:<10} {flops / 1e9:>12,.0f} {hours:>7.2f}  {key}")
    print(f"\n{sum(counts.values())} jobs ({counts['finished']} finished, {counts['unfinished']} unfinished, "
          f"{counts['new']} new); estimated {total_h:,.1f} GPU-hours to finish at "
          + "; ".join(sorted(sources)))


if __name__ == "__main__":
    main()
