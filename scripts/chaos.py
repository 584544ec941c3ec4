"""Chaos harness: run training commands, SIGKILL them at random moments, relaunch until they finish, and
check that nothing was corrupted and every metric equals an undisturbed run.

A kill is aimed *after* the run has made progress (a new checkpoint appeared) plus a random delay, so it lands
mid-epoch, mid-checkpoint-write or mid-evaluation rather than during interpreter start-up.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from crelu.results.record import RecordError, load_record

METRIC_KEYS_IGNORED = {"time_s", "images_per_s"}


@dataclass
class ChaosReport:
    runs_completed: int = 0
    kills: int = 0
    corrupted_files: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not self.corrupted_files and not self.mismatches

    def summary(self) -> str:
        return (f"runs completed: {self.runs_completed}\nkills survived: {self.kills}\n"
                f"files corrupted: {len(self.corrupted_files)}\nmetrics mismatches vs undisturbed: "
                f"{len(self.mismatches)}")


def train_command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "crelu.train", *overrides]


def _status(run_dir: Path) -> str:
    try:
        return load_record(run_dir).status
    except RecordError:
        return "missing"


def _newest_checkpoint_time(run_dir: Path) -> float:
    """Newest checkpoint write below ``run_dir`` (Single jobs checkpoint in phase1/ and phase2/)."""
    times = [p.stat().st_mtime for p in run_dir.rglob("checkpoint.pt")] if run_dir.exists() else []
    return max(times, default=0.0)


def run_with_kills(cmd: list[str], run_dir: Path, kills: int, rng: random.Random, *, max_delay: float = 0.6,
                   timeout: float = 600.0, env: dict | None = None) -> int:
    """Run ``cmd`` (which trains into ``run_dir``) with up to ``kills`` SIGKILLs, relaunching until finished.

    Returns the number of kills delivered.  Raises RuntimeError if the run fails or never finishes.
    """
    delivered = 0
    deadline = time.monotonic() + timeout
    while _status(run_dir) != "finished":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{run_dir} did not finish within {timeout:.0f}s")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                start_new_session=True)
        if delivered < kills:
            seen = _newest_checkpoint_time(run_dir)
            while proc.poll() is None and _newest_checkpoint_time(run_dir) == seen:
                time.sleep(0.02)
            if proc.poll() is None:
                time.sleep(rng.uniform(0.0, max_delay))
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    delivered += 1
        _, err = proc.communicate()
        if proc.returncode not in (0, -signal.SIGKILL):
            raise RuntimeError(f"training exited with {proc.returncode}:\n{err.decode()[-2000:]}")
    return delivered


def check_files(run_dir: Path) -> list[str]:
    """Every JSON/PT file of a run directory must load; no temporary files may be left as if complete."""
    bad = []
    for p in run_dir.rglob("*"):
        if not p.is_file():
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
    strip = lambda es: [{k: v for k, v in e.items() if k not in METRIC_KEYS_IGNORED} for e in es]  # noqa: E731
    if strip(a.epochs) != strip(b.epochs):
        diffs.append(f"{candidate}: per-epoch metrics differ")
    if {k: v for k, v in a.final.items()} != {k: v for k, v in b.final.items()}:
        diffs.append(f"{candidate}: final metrics differ ({a.final} vs {b.final})")
    la, lb = (torch.load(r.logits_path())["logits"] for r in (a, b))
    if not torch.equal(la, lb):
        diffs.append(f"{candidate}: test logits differ (max |diff| {float((la - lb).abs().max()):.3g})")
    return diffs
