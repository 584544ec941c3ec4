#!/usr/bin/env python
"""Chaos scenario (``make stress``; ``make stress KILLS=100 JOBS=8`` for the cluster-scale run).

``--jobs`` training jobs run concurrently on generated data (k-fold, Single, full, and packed k-fold jobs with
``protocol.pack=2`` and ``3``), first undisturbed, then under chaos: ``--kills`` SIGKILLs in total, shared
among the running jobs, each landing after the job made progress -- at a random moment (mid-step,
mid-evaluation) or right when an atomic write starts (mid-checkpoint, mid-record) -- and each killed job is
relaunched with the same command until it finishes.  Prints kills survived (and how many hit a write), files
corrupted (must be 0), metric mismatches vs the undisturbed runs (must be 0, bit-exact) and run-directory lock
conflicts seen in the jobs' output; exits 1 otherwise.  CPU, deterministic mode.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from chaos import ChaosReport, KillStats, check_files, compare_trees, run_with_kills, temp_files, train_command
from crelu.data.synthetic import write_fake_cifar

SPECS = [
    ["experiment=table1/baseline", "protocol=kfold", "protocol.fold=0"],
    ["experiment=table1/crelu", "protocol=kfold", "protocol.fold=0", "protocol.pack=2"],
    ["experiment=table1/crelu_half", "protocol=single"],
    ["experiment=table2/crelu_conv1", "protocol=kfold", "protocol.fold=2"],
    ["experiment=table1/baseline", "protocol=kfold", "protocol.fold=0", "protocol.pack=3"],
    ["experiment=table1/crelu", "protocol=kfold", "protocol.fold=1"],
    ["experiment=table1/avr", "protocol=full"],
    ["experiment=table1/double", "protocol=kfold", "protocol.fold=2"],
]
COMMON = ["profile=smoke", "train.deterministic=true", "train.threads=1", "schedule.epochs=3",
          "train.max_steps_per_epoch=6", "train.checkpoint_every_steps=1", "dataset.download=false"]


def job_overrides(i: int) -> list[str]:
    """Job ``i``: the specs in turn (another seed for every further lap, so no two jobs train the same run)."""
    return [*SPECS[i % len(SPECS)], *COMMON, f"train.seed={i // len(SPECS)}"]


class KillPool:
    """The kills still to deliver, shared by the running jobs (a job that finishes early leaves its share)."""

    def __init__(self, total: int):
        self.left, self._lock = total, threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.left += 1


def chaos_job(cmd: list[str], root: Path, pool: KillPool, rng: random.Random, env: dict, log: Path) -> KillStats:
    """Relaunch ``cmd`` until it exits 0, killing each launch once while the shared pool has kills left."""
    stats = KillStats()
    run_with_kills(cmd, root, 0, rng, env=env, in_writes=0.5, log_path=log, stats=stats, timeout=3600,
                   budget=pool.take, refund=pool.give_back)
    return stats


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/stress")
    p.add_argument("--kills", type=int, default=12, help="SIGKILLs in total (shared by the jobs)")
    p.add_argument("--jobs", type=int, default=4, help="jobs running at the same time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=4, help="at most this many chaos rounds to deliver --kills")
    a = p.parse_args()
    t0 = time.monotonic()
    out = Path(a.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    data = write_fake_cifar(out / "data", "cifar10", n_train=400, n_test=100)
    env = {**os.environ, "CRELU_DATA_ROOT": str(data), "CRELU_HYDRA_DIR": str(out / "hydra"),
           "OMP_NUM_THREADS": "1"}
    (out / "logs").mkdir(parents=True)
    jobs = [job_overrides(i) for i in range(a.jobs)]
    stamp = lambda: f"[{time.monotonic() - t0:5.0f}s]"  # noqa: E731
    print(f"{stamp()} {a.jobs} jobs, {a.kills} kills: undisturbed reference runs", flush=True)

    def reference(i: int) -> None:
        cmd = train_command([*jobs[i], f"output.root={out / 'ref' / str(i)}"])
        with open(out / "logs" / f"ref{i}.log", "w") as f:
            subprocess.run(cmd, env=env, check=True, stdout=f, stderr=subprocess.STDOUT)

    with ThreadPoolExecutor(a.jobs) as ex:
        list(ex.map(reference, range(a.jobs)))
    print(f"{stamp()} references done; chaos", flush=True)

    report = ChaosReport()
    rng = random.Random(a.seed)
    launches = 0
    for rnd in range(a.rounds):
        pool = KillPool(a.kills - report.kills)
        rngs = [random.Random(rng.random()) for _ in jobs]
        done = {"n": 0}
        lock = threading.Lock()

        def chaos(i: int, rnd=rnd, pool=pool, rngs=rngs, done=done, lock=lock) -> tuple[int, KillStats]:
            root = out / "chaos" / str(rnd) / str(i)
            stats = chaos_job(train_command([*jobs[i], f"output.root={root}"]), root, pool, rngs[i], env,
                              out / "logs" / f"chaos{rnd}-{i}.log")
            with lock:
                done["n"] += 1
                print(f"{stamp()} round {rnd} job {done['n']}/{len(jobs)} finished: {' '.join(jobs[i][:4])}: "
                      f"{stats.kills} kills, {stats.launches} launches", flush=True)
            return i, stats

        with ThreadPoolExecutor(a.jobs) as ex:
            results = list(ex.map(chaos, range(a.jobs)))
        for i, stats in results:
            root = out / "chaos" / str(rnd) / str(i)
            report.kills += stats.kills
            report.lock_conflicts += stats.lock_conflicts
            report.kills_in_writes += len(temp_files(root))
            launches += stats.launches
            report.corrupted_files += check_files(root)
            n, diffs = compare_trees(out / "ref" / str(i), root)
            report.runs_completed += n
            report.mismatches += diffs
        if report.kills >= a.kills:
            break
        print(f"{stamp()} {report.kills}/{a.kills} kills delivered; another round", flush=True)
    print(report.summary())
    print(f"jobs: {a.jobs} concurrent, {launches} launches in all; wall time {time.monotonic() - t0:.0f}s")
    for line in report.corrupted_files + report.mismatches:
        print("  " + line)
    if report.kills < a.kills:
        print(f"only {report.kills} of the {a.kills} kills could be delivered", file=sys.stderr)
        return 1
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
