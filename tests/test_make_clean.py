"""``make clean`` on a fresh clone: removes what the suite generates, keeps paper runs, leaves git unchanged."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

GENERATED = [
    "results/hydra/run/2026-01-01/00-00-00-000000/.hydra/config.yaml",
    "results/hydra/multirun/2026-01-01/00-00-00/0/train.log",
    "results/smoke/table1.md",
    "results/runs/smoke/table1/crelu/cifar10/kfold-0/seed0-abcd1234/run.json",
    "results/runs/smoke_imagenet/table4/baseline/imagenet/full/seed0-abcd1234/run.json",
    "results/stress/sweep/run.json",
    "results/wandb/wandb/debug.log",
    "outputs/2026-01-01/x.log",
    "multirun/2026-01-01/x.log",
    "wandb/debug.log",
    "data/generated/cifar-10-batches-py/data_batch_1",
    ".pytest_cache/v/cache/nodeids",
    ".ruff_cache/CACHEDIR.TAG",
    "src/crelu/__pycache__/__init__.cpython-311.pyc",
    "tests/__pycache__/conftest.cpython-311.pyc",
]
KEPT = [
    "results/runs/paper/table1/crelu/cifar10/kfold-0/seed0-abcd1234/run.json",
    "results/runs/paper/table1/crelu/cifar10/kfold-0/seed0-abcd1234/checkpoint.pt",
    "results/table1.md",
    "results/figures/pairing_cifar10.png",
    "results/bench/cifar.json",
]
WANDB_RUNS = {"smoke": "results/wandb/wandb/offline-run-20260101_000000-00000000000000aa",
              "paper": "results/wandb/wandb/offline-run-20260101_000001-00000000000000bb"}


def _write_wandb_run(folder: Path, run_id: str, profile: str) -> None:
    """A minimal wandb run file: the header and one run record (id, group, config.profile), checksummed."""
    from wandb.proto import wandb_internal_pb2 as pb

    rec = pb.Record()
    rec.run.run_id, rec.run.run_group = run_id, f"{profile}/table1/crelu/cifar10"
    item = rec.run.config.update.add()
    item.key, item.value_json = "profile", json.dumps(profile)
    data = rec.SerializeToString()
    crc = zlib.crc32(data, zlib.crc32(bytes([1]))) & 0xFFFFFFFF
    folder.mkdir(parents=True)
    (folder / f"run-{run_id}.wandb").write_bytes(
        struct.pack("<4sHB", b":W&B", 0xBEE1, 0) + struct.pack("<IHB", crc, len(data), 1) + data)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="needs make and git")
@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout")
def test_make_clean_on_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{REPO}", str(clone)], check=True)
    for rel in ("Makefile", "scripts/wandb_sync.py"):  # the files under test, committed or not
        shutil.copy(REPO / rel, clone / rel)
    before = _git(clone, "status", "--porcelain")
    tracked = _git(clone, "ls-files").splitlines()
    for rel in GENERATED + KEPT:
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        (clone / rel).write_text("x")
    for profile, rel in WANDB_RUNS.items():
        _write_wandb_run(clone / rel, rel.rsplit("-", 1)[-1], profile)

    res = subprocess.run(["make", "--no-print-directory", "clean", f"PYTHON={sys.executable}"], cwd=clone,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    left = [rel for rel in GENERATED if (clone / rel).exists()]
    assert left == []
    assert not any((clone / top).exists() for top in ("results/hydra", "results/stress", "outputs", "multirun",
                                                      "results/runs/smoke", "results/runs/smoke_imagenet"))
    assert all((clone / rel).exists() for rel in KEPT)
    assert not (clone / WANDB_RUNS["smoke"]).exists() and (clone / WANDB_RUNS["paper"]).exists()
    assert all((clone / rel).exists() for rel in tracked), "make clean deleted a tracked file"
    assert _git(clone, "status", "--porcelain") == before  # a fresh clone does not show as modified
