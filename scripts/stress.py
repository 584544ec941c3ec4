#!/usr/bin/env python
"""Bounded chaos scenario (``make stress``): a small sweep on generated data, SIGKILLed at random moments.

Each job runs twice: undisturbed, and under chaos (``--kills`` SIGKILLs at random points after it made
progress, relaunched with the same command until it finishes).  Prints runs completed, kills survived, files
corrupted (must be 0) and metric mismatches vs. the undisturbed sweep (must be 0); exits 1 otherwise.
CPU, deterministic mode, a few minutes.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from crelu.data.synthetic import write_fake_cifar
from crelu.reliability.chaos import ChaosReport, check_files, compare_runs, run_with_kills, train_command

JOBS = [
    ["experiment=table1/baseline", "protocol=kfold", "protocol.fold=0"],
    ["experiment=table1/crelu", "protocol=kfold", "protocol.fold=1"],
    ["experiment=table1/crelu_half", "protocol=single"],
    ["experiment=table2/crelu_conv1", "protocol=kfold", "protocol.fold=2"],
]
COMMON = ["profile=smoke", "train.deterministic=true", "train.threads=1", "schedule.epochs=3",
          "train.max_steps_per_epoch=6", "train.checkpoint_every_steps=1", "dataset.download=false"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/stress")
    p.add_argument("--kills", type=int, default=3, help="SIGKILLs per job")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    data = write_fake_cifar(out / "data", "cifar10", n_train=400, n_test=100)
    env = {**os.environ, "CRELU_DATA_ROOT": str(data)}
    rng = random.Random(a.seed)
    report = ChaosReport()
    t0 = time.monotonic()
    for i, job in enumerate(JOBS):
        ref, chaos = out / "ref" / str(i), out / "chaos" / str(i)
        subprocess.run(train_command([*job, *COMMON, f"output.run_dir={ref}"]), env=env, check=True,
                       stdout=subprocess.DEVNULL)
        report.kills += run_with_kills(train_command([*job, *COMMON, f"output.run_dir={chaos}"]), chaos, a.kills,
                                       rng, env=env)
        report.runs_completed += 1
        report.corrupted_files += check_files(chaos)
        report.mismatches += compare_runs(ref, chaos)
        print(f"[{time.monotonic() - t0:5.0f}s] job {i + 1}/{len(JOBS)} {' '.join(job)}: done", flush=True)
    print(report.summary())
    for line in report.corrupted_files + report.mismatches:
        print("  " + line)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
