"""Chaos harness (test tooling, not part of the installed package): run training commands, SIGKILL them at
random moments, relaunch until they finish, and check that nothing was corrupted and every metric equals an
undisturbed run.  Used by ``scripts/stress.py`` (``make stress``) and ``tests/test_reliability.py``.

A kill is aimed *after* the run has made progress (a checkpoint newer than the launch appeared), so every
relaunch moves the run forward, and then either after a random delay (mid-step, mid-evaluation) or at the
moment a temporary file of an atomic write appears (mid-checkpoint, mid-record, mid-logits write).  A kill that
lands inside a write leaves that write's ``.<name>.tmp-*`` file behind, which is how such kills are counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from crelu.results.record import RecordError, load_record

METRIC_KEYS_IGNORED = {"time_s", "images_per_s"}
LOCK_LINE = re.compile(r"run directory .* is locked by ")
TMP_GLOB = ".*.tmp-*"


@dataclass
class ChaosReport:
    runs_completed: int = 0
    kills: int = 0
    kills_in_writes: int = 0
    lock_conflicts: int = 0
    corrupted_files: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not self.corrupted_files and not self.mismatches

    def summary(self) -> str:
        return (f"runs completed: {self.runs_completed}\n"
                f"kills survived: {self.kills} ({self.kills_in_writes} inside a checkpoint/record write)\n"
                f"files corrupted: {len(self.corrupted_files)}\n"
                f"metrics mismatches vs undisturbed: {len(self.mismatches)} of {self.runs_completed} runs\n"
                f"lock conflicts seen: {self.lock_conflicts}")


@dataclass
class KillStats:
    kills: int = 0
    launches: int = 0
    lock_conflicts: int = 0


def train_command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "crelu.train", *overrides]


def _status(run_dir: Path) -> str:
    try:
        return load_record(run_dir).status
    except RecordError:
        return "missing"


def _newest_checkpoint_time(run_dir: Path) -> float:
    """Newest checkpoint write below ``run_dir`` (Single jobs checkpoint in phase1/ and phase2/, packed jobs in
    one directory per fold)."""
    times = []
    if run_dir.exists():
        for p in run_dir.rglob("checkpoint.pt"):
            with contextlib.suppress(FileNotFoundError):  # renamed to checkpoint.prev.pt meanwhile
                times.append(p.stat().st_mtime)
    return max(times, default=0.0)


def temp_files(run_dir: Path) -> set[Path]:
    """Temporary files of atomic writes below ``run_dir`` (left behind by a kill inside a write)."""
    return set(run_dir.rglob(TMP_GLOB)) if run_dir.exists() else set()


def _wait_for_write(proc: subprocess.Popen, run_dir: Path, before: set[Path], timeout: float) -> None:
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        if temp_files(run_dir) - before:
            return
        time.sleep(0.002)


def run_with_kills(cmd: list[str], run_dir: Path, kills: int, rng: random.Random, *, max_delay: float = 0.6,
                   timeout: float = 600.0, env: dict | None = None, in_writes: float = 0.0,
                   log_path: Path | None = None, stats: KillStats | None = None,
                   budget: Callable[[], bool] | None = None, refund: Callable[[], None] | None = None) -> int:
    """Run ``cmd`` (which trains below ``run_dir``) with up to ``kills`` SIGKILLs, relaunching until it exits 0.

    ``in_writes`` is the share of kills aimed at the start of an atomic write instead of a random delay.  Each
    launch's output is appended to ``log_path`` (default: kept in memory for the error message only).  With
    ``budget``, each launch asks ``budget()`` whether to kill it (a pool shared by several jobs) and calls
    ``refund()`` when the launch finished before the kill landed.  Returns the number of kills delivered;
    raises RuntimeError if the command fails or never finishes.
    """
    stats = stats if stats is not None else KillStats()
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{run_dir} did not finish within {timeout:.0f}s")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        stats.launches += 1
        if (budget() if budget is not None else stats.kills < kills):
            killed = False
            seen = _newest_checkpoint_time(run_dir)
            while proc.poll() is None and _newest_checkpoint_time(run_dir) == seen:
                time.sleep(0.01)
            if proc.poll() is None:
                if rng.random() < in_writes:
                    _wait_for_write(proc, run_dir, temp_files(run_dir), timeout=max(5 * max_delay, 2.0))
                else:
                    time.sleep(rng.uniform(0.0, max_delay))
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    stats.kills += 1
                    killed = True
            if not killed and refund is not None:
                refund()
        out, _ = proc.communicate()
        text = out.decode(errors="replace")
        stats.lock_conflicts += sum(1 for line in text.splitlines() if LOCK_LINE.search(line))
        if log_path is not None:
            with open(log_path, "a") as f:
                f.write(f"### launch {stats.launches}: exit {proc.returncode}\n{text}")
        if proc.returncode == 0:
            return stats.kills
        if proc.returncode != -signal.SIGKILL:
            raise RuntimeError(f"training exited with {proc.returncode}:\n{text[-2000:]}")


def check_files(run_dir: Path) -> list[str]:
    """Every JSON/PT file of a run directory must load (temporary files of interrupted writes are not results)."""
    bad = []
    for p in run_dir.rglob("*"):
        if not p.is_file() or p.match(TMP_GLOB):
            continue
        try:
            if p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".pt":
                torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e:
            bad.append(f"{p}: {type(e).__name__}: {e}")
    return bad


def compare_runs(reference: Path, candidate: Path) -> list[str]:
    """Differences between two finished runs: per-epoch metrics, final metrics, test logits (bit-exact)."""
    a, b = load_record(reference), load_record(candidate)
    diffs = []
    if b.status != "finished":
        return [f"{candidate}: status {b.status}, not finished"]
    strip = lambda es: [{k: v for k, v in e.items() if k not in METRIC_KEYS_IGNORED} for e in es]  # noqa: E731
    if strip(a.epochs) != strip(b.epochs):
        diffs.append(f"{candidate}: per-epoch metrics differ")
    if dict(a.final) != dict(b.final):
        diffs.append(f"{candidate}: final metrics differ ({a.final} vs {b.final})")
    la, lb = (torch.load(r.logits_path())["logits"] for r in (a, b))
    if not torch.equal(la, lb):
        diffs.append(f"{candidate}: test logits differ (max |diff| {float((la - lb).abs().max()):.3g})")
    return diffs


def compare_trees(reference: Path, candidate: Path) -> tuple[int, list[str]]:
    """Compare every run record below ``reference`` with the one at the same place below ``candidate``.

    Returns ``(records compared, differences)``: one entry per run that differs (a record missing from
    ``candidate`` is one).
    """
    diffs, n = [], 0
    for ref_json in sorted(reference.rglob("run.json")):
        rel = ref_json.parent.relative_to(reference)
        other = candidate / rel
        if not (other / "run.json").exists():
            diffs.append(f"{other}: no run record (the undisturbed run has one)")
            continue
        n += 1
        try:
            found = compare_runs(ref_json.parent, other)
        except (RecordError, OSError, RuntimeError) as e:
            found = [f"{other}: {type(e).__name__}: {e}"]
        if found:  # one entry per run that differs
            diffs.append(f"{other}: " + "; ".join(d.removeprefix(f"{other}: ") for d in found))
    return n, diffs
