"""Sweeps that report what broke: per-job progress, one table of finished/skipped/failed/diverged jobs, a
non-zero exit when a job failed, and a failing job never stops the others (crelu.sweep + crelu.train)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crelu.data.synthetic import write_fake_cifar
from crelu.results.record import load_record
from crelu.sweep import format_table, summarise

TINY = ["model.width_scale=0.125", "schedule.epochs=2", "schedule.milestones=[1]", "train.batch_size=32",
        "train.eval_batch_size=100", "train.max_steps_per_epoch=3", "train.quiet=true", "train.threads=1",
        "dataset.download=false"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fake_cifar(tmp_path_factory.mktemp("sweep_data"), "cifar10", n_train=400, n_test=100, seed=1)


def _env(data: Path, tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CRELU_SWEEP_OK_ON_FAILURE", "HYDRA_FULL_ERROR")}
    return {**env, "CRELU_DATA_ROOT": str(data), "CRELU_CIFAR100_ROOT": str(tmp / "no_cifar100"),
            "CRELU_HYDRA_DIR": str(tmp / "hydra"), **extra}


def _sweep(args: list[str], env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crelu.train", "-m", *TINY, *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _summary(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.startswith("sweep summary:")]
    assert len(lines) == 1, out[-3000:]
    return lines[0]


@pytest.mark.slow
def test_sweep_with_a_diverged_and_a_crashing_job_reports_both_and_exits_1(data, tmp_path):
    # cifar100 has no data (both of its jobs crash); lr=1e6 makes the loss NaN within the first steps
    p = _sweep(["dataset=cifar100,cifar10", "optim.lr=0.01,1e6", f"output.root={tmp_path / 'runs'}",
                f"hydra.sweep.dir={tmp_path / 'sweep'}"], _env(data, tmp_path))
    assert p.returncode == 1, p.stderr[-3000:]
    assert re.search(r"sweep summary: 4 jobs \| finished 1 \| skipped 0 \| failed 2 \| diverged 1", _summary(p.stdout))
    progress = re.findall(r"^sweep: job (\d)/4 done: #(\d) (\w+) \((.*)\)$", p.stdout, re.M)
    assert [(d, n, s) for d, n, s, _ in progress] == [("1", "0", "failed"), ("2", "1", "failed"),
                                                      ("3", "2", "finished"), ("4", "3", "diverged")]
    assert progress[3][3] == "dataset=cifar10 optim.lr=1000000.0"  # only what varies across the sweep
    rows = {int(m[0]): m[1:] for m in re.findall(r"^\s+(\d+)\s+(failed|diverged)\s+(\S+) -- (.*)$", p.stdout, re.M)}
    assert sorted(rows) == [0, 1, 3]
    for job in (0, 1):
        assert rows[job][0] == "failed" and rows[job][2].startswith("CIFAR100 not found")
        assert "CRELU_CIFAR100_ROOT" in rows[job][2]
    status, run_dir, reason = rows[3]
    assert status == "diverged" and "nan" in reason.lower()
    rec = load_record(run_dir)  # the diverged job's run directory holds its record, marked failed
    assert rec.status == "failed" and rec.data["failure"]["type"] == "DivergedError"
    finished = [r for r in (tmp_path / "runs").rglob("run.json") if json.loads(r.read_text())["status"] == "finished"]
    assert len(finished) == 1  # the job after the crashes still trained
    assert "crelu-train: error: 2 of 4 sweep jobs failed" in p.stderr and "Traceback" not in p.stderr
    outcomes = sorted((tmp_path / "sweep").glob("*/crelu_job.json"))
    assert [json.loads(o.read_text())["status"] for o in outcomes] == ["failed", "failed", "finished", "diverged"]


@pytest.mark.slow
def test_failed_jobs_exit_1_unless_the_flag_keeps_0(data, tmp_path):
    args = ["dataset=cifar100", "train.seed=0,1", f"output.root={tmp_path / 'runs'}"]
    p = _sweep([*args, f"hydra.sweep.dir={tmp_path / 's1'}"], _env(data, tmp_path))
    assert p.returncode == 1, p.stderr[-3000:]
    assert "failed 2" in _summary(p.stdout)
    assert p.stdout.count("sweep: job ") == 2 and "sweep: job 2/2 done: #1 failed (train.seed=1)" in p.stdout
    q = _sweep([*args, f"hydra.sweep.dir={tmp_path / 's2'}"], _env(data, tmp_path, CRELU_SWEEP_OK_ON_FAILURE="1"))
    assert q.returncode == 0, q.stderr[-3000:]
    assert "failed 2" in _summary(q.stdout) and "sweep jobs failed" not in q.stderr
    r = _sweep([*args, f"hydra.sweep.dir={tmp_path / 's3'}", "hydra.callbacks.sweep_report.ok_on_failure=true"],
               _env(data, tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]


def test_single_run_errors_still_exit_2_without_a_table(data, tmp_path):
    p = subprocess.run([sys.executable, "-m", "crelu.train", *TINY, "dataset=cifar100",
                        f"output.root={tmp_path / 'runs'}"], env=_env(data, tmp_path), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2
    assert "sweep summary" not in p.stdout and p.stderr.count("crelu-train: error: CIFAR100 not found") == 1


@pytest.mark.slow
def test_joblib_sweep_collects_outcomes_from_worker_processes(data, tmp_path):
    p = _sweep(["dataset=cifar10,cifar100", f"output.root={tmp_path / 'runs'}", f"hydra.sweep.dir={tmp_path / 's'}",
                "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], _env(data, tmp_path))
    assert p.returncode == 1, p.stderr[-3000:]
    assert re.search(r"2 jobs \| finished 1 \| skipped 0 \| failed 1 \| diverged 0", _summary(p.stdout))
    again = _sweep(["dataset=cifar10,cifar100", f"output.root={tmp_path / 'runs'}",
                    f"hydra.sweep.dir={tmp_path / 's'}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                   _env(data, tmp_path, CRELU_CIFAR100_ROOT=str(data / "none")))
    # relaunched into the same sweep folder: old outcomes are not counted twice; the finished job is skipped
    assert re.search(r"2 jobs \| finished 0 \| skipped 1 \| failed 1", _summary(again.stdout)), again.stdout


def test_summary_counts_jobs_that_never_reported_as_failed():
    outcomes = [{"num": 1, "status": "finished"}, {"num": 0, "status": "diverged", "run_dir": "/r/0",
                                                   "reason": "training loss is nan\nmore"}]
    counts, rows = summarise(outcomes, total=4)
    assert counts == {"finished": 1, "skipped": 0, "failed": 2, "diverged": 1}
    assert [r["status"] for r in rows] == ["diverged", "failed"]
    table = format_table(counts, rows, Path("/sweep"))
    assert table.splitlines()[0] == "sweep summary: 4 jobs | finished 1 | skipped 0 | failed 2 | diverged 1   (/sweep)"
    assert "     0  diverged  /r/0 -- training loss is nan" in table.splitlines()
    assert "2 job(s) never reported an outcome" in table
