"""The cluster path against a running SLURM (``make slurm-up``, then ``make test-slurm``; a few minutes on 2 cores).

Every job goes through Hydra's submitit launcher (``hydra/launcher=slurm``) exactly as ``make table1
LAUNCHER=slurm`` sends it, with CPU-sized resources.  Checked here:

* a smoke Table 1 sweep (one row, both datasets, Single + 3 folds) goes in as one job array and gives a table;
* submitit's own preemption signal (read from the installed submitit, not assumed) makes a running job
  checkpoint mid-epoch, requeue and resume to the same record -- epochs, final metrics and test logits
  bit-identical to an undisturbed run (``train.deterministic=true``);
* ``scontrol requeue`` of a running job (SIGTERM, SIGKILL after KillWait, SLURM requeues) resumes too;
* a job that reaches its real time limit is requeued up to ``max_num_timeout`` times and then reported;
* two launchers started at once get two sweep folders.

A requeued job waits ~120 s (``Reason=BeginTime``) before SLURM starts it again; the tests skip that wait with
``scontrol update JobId=N StartTime=now``.  Without a cluster every test is skipped (``make test``); ``make
test-slurm`` sets CRELU_REQUIRE_SLURM=1, which turns the skip into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import pandas as pd
import pytest

from crelu.data.synthetic import write_fake_cifar
from crelu.results.record import load_record
from crelu.training.checkpoint import CKPT_NAME, load_latest
from crelu.training.preemption import submitit_signal

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CPU_JOB = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
           "hydra.launcher.mem_gb=2", "hydra.launcher.array_parallelism=8"]
# A small deterministic CIFAR-10 run that checkpoints every 4 steps (mid-epoch resume points).
RUN = ["experiment=table1/crelu", "model.width_scale=0.125", "train.batch_size=32", "train.checkpoint_every_steps=4",
       "train.deterministic=true", "train.threads=1", "train.quiet=true", "dataset.download=false",
       "dataset.test_subset=100"]
SHORT = [*RUN, "schedule.epochs=4", "schedule.milestones=[3]", "dataset.train_subset=800"]  # 100 steps
MEDIUM = [*RUN, "schedule.epochs=8", "schedule.milestones=[6]", "dataset.train_subset=1600"]  # 400 steps
ENDLESS = [*RUN, "schedule.epochs=400", "schedule.milestones=[300]", "dataset.train_subset=1600"]  # hours


def _slurm_problem() -> str | None:
    """Why no cluster can take jobs here (None when one can)."""
    missing = [t for t in ("sbatch", "squeue", "scontrol", "scancel", "sinfo") if shutil.which(t) is None]
    if missing:
        return f"SLURM client tools missing ({', '.join(missing)})"
    if not os.environ.get("SLURM_CONF") and not Path("/etc/slurm/slurm.conf").exists():
        conf = Path(os.environ.get("CRELU_SLURM_DIR", "/tmp/crelu-slurm")) / "slurm.conf"
        if not conf.exists():
            return "no slurm.conf (neither SLURM_CONF, /etc/slurm/slurm.conf nor $CRELU_SLURM_DIR/slurm.conf)"
        os.environ["SLURM_CONF"] = str(conf)  # the cluster of scripts/slurm_up.sh; sbatch in jobs inherits it
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
        nodes = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "scontrol/sinfo did not answer within 20 s"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"slurmctld does not answer (scontrol ping: {(ping.stdout + ping.stderr).strip()[:200]})"
    if not {s.rstrip("*") for s in nodes.stdout.split()} & {"idle", "mix", "alloc"}:
        return f"no node takes jobs (sinfo states: {nodes.stdout.split()})"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    problem = _slurm_problem()
    if problem:
        msg = f"no running SLURM cluster: {problem}; start one with `sudo make slurm-up`"
        if os.environ.get("CRELU_REQUIRE_SLURM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def c10(tmp_path_factory) -> Path:
    return write_fake_cifar(tmp_path_factory.mktemp("slurm_c10_"), "cifar10", n_train=1600, n_test=100, seed=3)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CRELU_CIFAR100_ROOT", "CRELU_DATA_ROOT")}
    return {**env, "WANDB_MODE": "disabled", **extra}


def _launch(overrides: list[str], sweep: Path, env: dict, cwd: Path = REPO) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "crelu.train", "-m", *overrides, *CPU_JOB]
    if sweep is not None:
        cmd.append(f"hydra.sweep.dir={sweep}")
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _job_ids(sweep: Path) -> list[str]:
    """Array task ids (``<array>_<index>``) of a sweep, from submitit's per-job folders."""
    folder = sweep / ".submitit"
    ids = sorted(p.name for p in folder.iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)) if folder.exists() else []
    return [i for i in ids if "_" in i] or ids  # an array of N > 1 jobs also has a folder for the array itself


def _squeue(job: str) -> tuple[str, str]:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r"], capture_output=True, text=True).stdout
    state, _, reason = out.strip().partition("|")
    return state, reason


@contextmanager
def skip_begin_time(sweep: Path):
    """While inside: start every requeued job of ``sweep`` 2 s from now instead of after SLURM's ~120 s BeginTime.

    Not ``StartTime=now``: slurmd revokes the killed run's credential with a 1-second resolution, so a restart in
    the same second as the requeue is killed at once ("Killing non-startable batch JobId=N: Job credential
    revoked") and the job ends without a result.  Yields the list of jobs started this way, one entry per requeue.
    """
    stop, started, waiting = threading.Event(), [], set()

    def loop():
        while not stop.is_set():
            for job in _job_ids(sweep):
                state = _squeue(job)
                if state == ("PENDING", "BeginTime") and job not in waiting:
                    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+2"], capture_output=True)
                    started.append(job)
                    waiting.add(job)
                elif state[0] != "PENDING":
                    waiting.discard(job)
            stop.wait(0.3)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield started
    finally:
        stop.set()
        t.join()


def _wait(pred, timeout: float, what: str, proc: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"launcher ended (rc {proc.returncode}) before {what}:\n{proc.stdout.read()[-4000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"launcher still running after {timeout:.0f} s:\n{out[-4000:]}") from None
    return out


def _same_record(reference: Path, candidate: Path) -> list[str]:
    """Differences between two finished runs' records: every per-epoch and final metric (not wall times)."""
    def metrics(rows):
        return [{k: v for k, v in r.items() if not (k.endswith("time_s") or k.endswith("per_s"))} for r in rows]
    a, b = load_record(reference), load_record(candidate)
    diffs = [] if metrics(a.epochs) == metrics(b.epochs) else [f"epochs differ: {a.epochs} vs {b.epochs}"]
    if metrics([a.final]) != metrics([b.final]):
        diffs.append(f"final differs: {a.final} vs {b.final}")
    return diffs + ([] if len(a.epochs) == len(b.epochs) > 0 else ["no epochs recorded"])


def _run_dir(root: Path) -> Path:
    runs = [p.parent for p in root.rglob("run.json")]
    assert len(runs) == 1, runs
    return runs[0]


def _checkpoint_at_step(root: Path):
    """The run's checkpoint once it holds a mid-epoch position (the job is inside the training loop)."""
    for p in root.rglob(CKPT_NAME):
        try:
            state = load_latest(p.parent)
        except Exception:  # noqa: BLE001 - being written; next poll
            return None
        if state and state.get("mid_epoch"):
            return state
    return None


def _job_log(sweep: Path, job: str) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((sweep / ".submitit" / job).glob("*_log.*")))


def _events(log: str, pattern: str) -> list[str]:
    """Lines matching ``pattern``, once per event: submitit and Hydra both log an event, to .out and .err."""
    seen = {}
    for line in log.splitlines():
        stamp = re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", line)
        if stamp and re.search(pattern, line):
            seen.setdefault(stamp.group(0), line)
    return [seen[k] for k in sorted(seen)]


def _reference(overrides: list[str], root: Path, env: dict) -> subprocess.Popen:
    """The same run, undisturbed and outside SLURM (started next to the SLURM job: 2 cores, 2 processes)."""
    return subprocess.Popen([sys.executable, "-m", "crelu.train", *overrides, f"output.root={root}"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_smoke_table1_sweep_runs_as_one_job_array(tmp_path):
    data, unused = tmp_path / "data", tmp_path / "smoke-data-default"
    subprocess.run([sys.executable, "scripts/make_fake_cifar.py", "--out", str(data), "--train", "300",
                    "--test", "100"], cwd=REPO, check=True, capture_output=True)
    args = " ".join(["experiment=table1/crelu_half", f"output.root={tmp_path / 'runs'}",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", *CPU_JOB[1:]])
    # CRELU_DATA_ROOT alone: the Makefile must read CIFAR-100 from it too (never from its SMOKE_DATA default).
    make = subprocess.run(["make", "--no-print-directory", "table1", "PROFILE=smoke", "LAUNCHER=slurm",
                           f"PYTHON={sys.executable}", f"SMOKE_DATA={unused}", f"RUNS={tmp_path / 'runs' / 'smoke'}",
                           f"TABLES={tmp_path / 'tables'}", f"ARGS={args}"],
                          cwd=REPO, env=_env(CRELU_DATA_ROOT=str(data)), capture_output=True, text=True, timeout=900)
    assert make.returncode == 0, make.stdout[-3000:] + make.stderr[-3000:]
    assert not unused.exists()

    jobs = _job_ids(tmp_path / "sweep")
    assert len(jobs) == 8 and len({j.split("_")[0] for j in jobs}) == 1  # 2 datasets x (single + 3 folds), 1 array
    runs = pd.read_csv(tmp_path / "tables" / "table1_runs.csv")
    records = [load_record(d) for d in runs["run_dir"]]
    assert len(records) >= 8 and all(r.status == "finished" for r in records)
    roots = {r.data["config"]["dataset"]["name"]: Path(r.data["config"]["dataset"]["root"]) for r in records}
    assert {k: v.resolve() for k, v in roots.items()} == {"cifar10": data.resolve(), "cifar100": data.resolve()}
    cells = pd.read_csv(tmp_path / "tables" / "table1.csv").set_index(["row", "dataset", "metric"])
    for ds in ("cifar10", "cifar100"):
        for metric, n in (("single_test", 1), ("average", 3), ("vote", 3)):
            cell = cells.loc[("crelu_half", ds, metric)]
            assert cell["n_runs"] == n and 0 <= cell["ours"] <= 100, (ds, metric, cell.to_dict())
        folds = runs[(runs["dataset"] == ds) & (runs["metric"] == "average")]["value"]
        assert len(folds) == 3 and cells.loc[("crelu_half", ds, "average")]["ours"] == pytest.approx(folds.mean())
    assert cells.drop(index="crelu_half", level="row")["ours"].isna().all()  # only the row that was swept


def test_submitit_signal_checkpoints_requeues_and_resumes_bit_identical(c10, tmp_path):
    sig = signal.Signals(submitit_signal())  # what the installed submitit asks SLURM for (USR2 in submitit 1.5)
    env = _env(CRELU_DATA_ROOT=str(c10))
    proc = _launch([*SHORT, f"output.root={tmp_path / 'slurm'}"], tmp_path / "sweep", env)
    ref = _reference(SHORT, tmp_path / "ref", env)
    with skip_begin_time(tmp_path / "sweep") as started:
        (job,) = _wait(lambda: _job_ids(tmp_path / "sweep"), 60, "the job's submission", proc)
        before = _wait(lambda: _checkpoint_at_step(tmp_path / "slurm"), 240, "a mid-epoch checkpoint", proc)
        subprocess.run(["scancel", f"--signal={sig.name.removeprefix('SIG')}", job], check=True)
        out = _finish(proc, 420)
    assert proc.returncode == 0, out[-4000:]
    assert _finish(ref, 300) is not None and ref.returncode == 0

    log = _job_log(tmp_path / "sweep", job)
    assert len(_events(log, f"Caught signal {sig.name} on .*: this job is preempted")) == 1, log[-3000:]
    assert len(_events(log, f"{sig.name} received: checkpointing at the next step")) == 1  # our guard, first
    assert len(_events(log, r"Requeued job \S+ \(3 remaining timeouts\)")) == 1  # a preemption, not a timeout
    assert started == [job]  # requeued once
    resumed = _events(log, r"resuming \S+ from epoch \d+ step \d+")
    assert len(resumed) == 1, log[-3000:]
    epoch, step = map(int, re.search(r"from epoch (\d+) step (\d+)", resumed[0]).groups())
    assert (epoch, step) >= (before["epoch"], before["mid_epoch"]["progress"]["step"]) and step > 0
    run = _run_dir(tmp_path / "slurm")
    assert load_record(run).status == "finished"
    assert _same_record(_run_dir(tmp_path / "ref"), run) == []


def test_scontrol_requeue_of_a_running_job_resumes_bit_identical(c10, tmp_path):
    env = _env(CRELU_DATA_ROOT=str(c10))
    proc = _launch([*MEDIUM, f"output.root={tmp_path / 'slurm'}"], tmp_path / "sweep", env)
    ref = _reference(MEDIUM, tmp_path / "ref", env)
    with skip_begin_time(tmp_path / "sweep") as started:
        (job,) = _wait(lambda: _job_ids(tmp_path / "sweep"), 60, "the job's submission", proc)
        before = _wait(lambda: _checkpoint_at_step(tmp_path / "slurm"), 240, "a mid-epoch checkpoint", proc)
        subprocess.run(["scontrol", "requeue", job], check=True)
        # SLURM sends SIGTERM now and SIGKILL after KillWait (30 s), then requeues.  The run checkpoints at the
        # step after the SIGTERM and trains on; the test sends that SIGKILL itself once the checkpoint is written.
        _wait(lambda: _events(_job_log(tmp_path / "sweep", job), "SIGTERM received: checkpointing"), 60,
              "the SIGTERM checkpoint", proc)
        time.sleep(2)
        pids = [int(ln.split()[0]) for ln in subprocess.run(["scontrol", "listpids", job], capture_output=True,
                                                             text=True).stdout.splitlines()[1:] if ln.strip()]
        assert pids, "the job ended before SLURM's SIGKILL: nothing left to resume"
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        out = _finish(proc, 480)
    assert proc.returncode == 0, out[-4000:]
    assert _finish(ref, 300) is not None and ref.returncode == 0
    assert started == [job]  # SLURM requeued it once
    log = _job_log(tmp_path / "sweep", job)
    resumed = _events(log, r"resuming \S+ from epoch \d+ step \d+")
    assert len(resumed) == 1, log[-3000:]
    epoch, step = map(int, re.search(r"from epoch (\d+) step (\d+)", resumed[0]).groups())
    assert (epoch, step) > (before["epoch"], before["mid_epoch"]["progress"]["step"])  # from the SIGTERM checkpoint
    run = _run_dir(tmp_path / "slurm")
    assert load_record(run).status == "finished"
    assert _same_record(_run_dir(tmp_path / "ref"), run) == []


def test_real_time_limit_requeues_up_to_max_num_timeout_then_reports(c10, tmp_path):
    sig = signal.Signals(submitit_signal())
    # 1-minute limit, submitit's signal 10 s before it (slurmctld checks every 30 s: it arrives 20-50 s in);
    # the run (ENDLESS) cannot finish in two such minutes.
    limits = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=10", "hydra.launcher.max_num_timeout=1"]
    env = _env(CRELU_DATA_ROOT=str(c10))
    over = [*ENDLESS, f"output.root={tmp_path / 'slurm'}", *limits]
    proc = _launch(over, tmp_path / "sweep", env)
    with skip_begin_time(tmp_path / "sweep") as started:
        out = _finish(proc, 420)
    assert proc.returncode != 0
    assert "timed-out too many times" in out, out[-4000:]  # the launcher reports the job
    (job,) = _job_ids(tmp_path / "sweep")
    assert started == [job]  # requeued exactly max_num_timeout = 1 time
    log = _job_log(tmp_path / "sweep", job)
    assert len(_events(log, f"Caught signal {sig.name} on .*: this job is timed-out")) == 2, log[-3000:]
    assert len(_events(log, r"Requeued job \S+ \(0 remaining timeouts\)")) == 1
    assert len(_events(log, "Job not requeued because: timed-out too many times")) == 1
    record = load_record(_run_dir(tmp_path / "slurm"))
    assert record.status == "interrupted" and len(record.epochs) < 400
    # the launcher reads the result as soon as it is written; the job itself then ends, and nothing is requeued
    _wait(lambda: _squeue(job)[0] in ("", "COMPLETED", "FAILED"), 90, "the job to end")


def test_two_launchers_started_together_get_two_sweep_folders(c10, tmp_path):
    env = _env(CRELU_DATA_ROOT=str(c10), CRELU_HYDRA_DIR=str(tmp_path / "hydra"))
    tiny = [*RUN, "schedule.epochs=2", "schedule.milestones=[1]", "dataset.train_subset=100",
            "train.max_steps_per_epoch=2", "train.checkpoint_every_steps=null"]
    procs = [_launch([*tiny, f"output.root={tmp_path / f'runs{i}'}"], None, env) for i in range(2)]
    outs = [_finish(p, 300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-2000:] for o in outs]
    sweeps = sorted(p.parent for p in (tmp_path / "hydra" / "multirun").glob("*/*/.submitit"))
    assert len(sweeps) == 2 and all(len(_job_ids(s)) == 1 for s in sweeps), sweeps
    for i in range(2):
        assert load_record(_run_dir(tmp_path / f"runs{i}")).status == "finished"
