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

import numpy as np
import pandas as pd
import pytest
import torch

from crelu.data.synthetic import write_fake_cifar
from crelu.protocols.ensemble import vote_error
from crelu.results.record import iter_records
from crelu.tables.rows import ROWS

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
    assert len(lines) == len(ROWS["table2"]) * 2 * 2  # rows (from configs/experiment/table2/) x datasets x jobs
    assert all(" new " in ln for ln in lines)
    summary = p.stdout.strip().splitlines()[-1]
    n = len(ROWS["table2"]) * 2 * 2
    assert summary.startswith(f"{n} jobs (0 finished, 0 unfinished, {n} new); estimated")
    hours = float(summary.split("estimated ")[1].split(" GPU-hours")[0].replace(",", ""))
    assert hours > 1  # 16 VGG runs of 300 epochs on 45-50k images are hours, not minutes, of GPU time
    assert "vgg: assumed 100 TFLOP/s" in summary


def test_seeds_sweep_gives_intervals_claims_and_a_report(tmp_path):
    """``make table1 PROFILE=smoke SEEDS=2 && make report PROFILE=smoke``, reduced to two rows on CIFAR-10."""
    data = tmp_path / "data"
    write_fake_cifar(data, "cifar10", n_train=300, n_test=100, seed=0)
    env = {**os.environ, "CRELU_DATA_ROOT": str(data), "CRELU_CIFAR100_ROOT": str(data)}
    cmd = [sys.executable, "-m", "crelu.train", "-m", "table=table1", "profile=smoke",
           "experiment=table1/baseline,table1/crelu", "dataset=cifar10", "protocol.job=single,fold0,fold1,fold2",
           "train.seed=0,1", f"output.root={tmp_path / 'runs'}", f"hydra.sweep.dir={tmp_path / 'hydra'}",
           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    sweep = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    runs, out = tmp_path / "runs" / "smoke", tmp_path / "results"
    tab = subprocess.run([sys.executable, "-m", "crelu.tables", "table1", "--profile", "smoke", "--runs", str(runs),
                          "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert tab.returncode == 0, tab.stderr

    # cells: mean over the two seeds' Averages ± the 95% t-interval over seeds
    records = [r for r in iter_records(runs) if not isinstance(r, Exception) and r.meta.get("phase") is None]
    folds = [r for r in records if r.meta["row"] == "crelu" and r.meta["protocol"] == "kfold"]
    assert sorted({r.meta["seed"] for r in folds}) == [0, 1] and len(folds) == 6
    seed_avg = [np.mean([r.final["test_error"] for r in folds if r.meta["seed"] == s]) for s in (0, 1)]
    cells = pd.read_csv(out / "table1.csv").set_index(["row", "dataset", "metric"])
    c = cells.loc[("crelu", "cifar10", "average")]
    half = 12.706204736174705 * np.std(seed_avg, ddof=1) / np.sqrt(2)  # t(0.975, 1)
    assert c["ours"] == pytest.approx(np.mean(seed_avg)) and c["n_seeds"] == 2
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((np.mean(seed_avg) - half, np.mean(seed_avg) + half))
    # every run behind the cell is traceable, with its variant (one per seed)
    tidy = pd.read_csv(out / "table1_runs.csv")
    used = tidy[(tidy.row == "crelu") & (tidy.metric == "average") & tidy.used]
    assert sorted(used["run_dir"]) == sorted(str(r.run_dir) for r in folds)
    assert used["variant"].nunique() == 2 and used.groupby("variant")["seed"].nunique().eq(1).all()
    claims = pd.read_csv(out / "table1_claims.csv")
    beat = claims[(claims.id == "t1-crelu-beats-baseline") & (claims.dataset == "cifar10")
                  & (claims.metric == "average")].iloc[0]
    assert beat.n_pairs == 6 and beat.verdict in ("reproduced", "not reproduced", "inconclusive")

    rep = subprocess.run([sys.executable, "-m", "crelu.report", "--profile", "smoke", "--runs", str(runs),
                          "--results", str(out), "--tables", "table1"], capture_output=True, text=True, timeout=600)
    assert rep.returncode == 0, rep.stderr
    page = (out / "report.html").read_text()
    assert "(2 seeds)" in page and "Claims of the paper (table1)" in page and "these numbers are meaningless" in page
    from tests.test_report import _browser, assert_rendered, render_in_browser

    if _browser():  # the page in a real browser where one is installed (tests/test_report.py skips otherwise)
        dom, shot = render_in_browser(out / "report.html", tmp_path)
        assert_rendered(dom, shot)
