"""A reduced ``make table1 PROFILE=smoke``: a real Hydra multirun (joblib, 2 parallel jobs) + table regeneration.

Checks that every table cell traces to run records on disk, that aggregation running while jobs write never
reads a half-written file, and that relaunching the finished sweep trains nothing.
"""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

from crelu.data.synthetic import write_fake_cifar
from crelu.protocols.ensemble import vote_error
from crelu.results.record import iter_records

pytestmark = pytest.mark.slow


def _sweep(root: Path, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "crelu.train", "-m", "table=table1", "profile=smoke",
           "experiment=table1/baseline,table1/crelu_half", "dataset=cifar10,cifar100",
           "protocol.job=single,fold0,fold1,fold2", f"output.root={root / 'runs'}",
           f"hydra.sweep.dir={root / 'hydra'}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def _run_jsons(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (root / "runs").rglob("run.json")}


def test_table1_smoke_sweep_end_to_end(tmp_path):
    data = tmp_path / "data"
    write_fake_cifar(data, "cifar10", n_train=300, n_test=100, seed=0)
    write_fake_cifar(data, "cifar100", n_train=300, n_test=100, seed=1)
    env = {**os.environ, "CRELU_DATA_ROOT": str(data), "CRELU_CIFAR100_ROOT": str(data)}

    torn, stop = [], threading.Event()

    def aggregate_while_writing():  # a reader racing the writers must never see a torn file
        while not stop.is_set():
            for p in list((tmp_path / "runs").rglob("*.json")):
                try:
                    json.loads(p.read_text())
                except FileNotFoundError:
                    pass
                except ValueError as e:
                    torn.append(f"{p}: {e}")

    reader = threading.Thread(target=aggregate_while_writing, daemon=True)
    reader.start()
    first = _sweep(tmp_path, env)
    stop.set()
    reader.join()
    assert first.returncode == 0, first.stderr[-3000:]
    assert torn == []

    records = [r for r in iter_records(tmp_path / "runs") if not isinstance(r, Exception)]
    top = [r for r in records if r.meta.get("phase") is None]
    assert len(top) == 2 * 2 * 4 and all(r.status == "finished" for r in top)
    assert len({r.run_dir for r in top}) == 16  # parallel jobs never shared a directory

    out = tmp_path / "tables"
    tab = subprocess.run([sys.executable, "-m", "crelu.tables", "table1", "--profile", "smoke",
                          "--runs", str(tmp_path / "runs" / "smoke"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert tab.returncode == 0, tab.stderr
    for ext in ("md", "csv", "tex"):
        assert (out / f"table1.{ext}").stat().st_size > 0
    cells = pd.read_csv(out / "table1.csv")
    runs = pd.read_csv(out / "table1_runs.csv")
    assert runs["run_dir"].map(lambda d: Path(d, "run.json").exists()).all()

    # recompute Average and Vote of one cell from the records on disk and compare with the table
    folds = sorted((r for r in top if r.meta["row"] == "crelu_half" and r.meta["dataset"] == "cifar100"
                    and r.meta["protocol"] == "kfold"), key=lambda r: r.meta["fold"])
    errs = [r.final["test_error"] for r in folds]
    logits = [torch.load(r.logits_path())["logits"] for r in folds]
    labels = torch.load(folds[0].logits_path())["labels"]
    cell = cells.set_index(["row", "dataset", "metric"])
    assert cell.loc[("crelu_half", "cifar100", "average"), "ours"] == pytest.approx(sum(errs) / len(errs))
    assert cell.loc[("crelu_half", "cifar100", "vote"), "ours"] == pytest.approx(
        vote_error([x.numpy() for x in logits], labels.numpy())["prob_avg"])
    single = next(r for r in top if r.meta["row"] == "baseline" and r.meta["dataset"] == "cifar10"
                  and r.meta["protocol"] == "single")
    assert cell.loc[("baseline", "cifar10", "single_test"), "ours"] == pytest.approx(single.final["test_error"])
    assert cell.loc[("baseline", "cifar10", "single_train"), "ours"] == pytest.approx(
        single.data["protocol"]["train_error_full"])
    assert pd.isna(cell.loc[("crelu", "cifar10", "average"), "ours"])  # a row that was not run stays empty

    before = _run_jsons(tmp_path)
    again = _sweep(tmp_path, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _run_jsons(tmp_path) == before  # relaunching a finished sweep trains and rewrites nothing
    assert (again.stderr + again.stdout).count("skipping") == 16


def test_dry_run_lists_jobs_and_estimates_gpu_hours(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, str(repo / "scripts" / "plan_sweep.py"), "table2", "--profile", "paper",
                        "--jobs", "single,fold0", f"output.root={tmp_path}"], capture_output=True, text=True,
                       timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if "table2/" in ln]
    assert len(lines) == 4 * 2 * 2  # rows x datasets x jobs
    assert all(" new " in ln for ln in lines)
    summary = p.stdout.strip().splitlines()[-1]
    assert summary.startswith("16 jobs (0 finished, 0 unfinished, 16 new); estimated")
    hours = float(summary.split("estimated ")[1].split(" GPU-hours")[0].replace(",", ""))
    assert hours > 1  # 16 VGG runs of 300 epochs on 45-50k images are hours, not minutes, of GPU time
    assert "vgg: assumed 100 TFLOP/s" in summary
