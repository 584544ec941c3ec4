"""Preemption, resume, corrupt checkpoints, full disks, old records, wandb failures: nothing is lost."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

from crelu.config import compose_config
from crelu.results.io import atomic_write_json
from crelu.results.record import SchemaVersionError, load_record
from crelu.training import run as trainer_mod
from crelu.training import train
from crelu.training.checkpoint import CKPT_NAME, PREV_NAME, load_latest
from crelu.training.preemption import PreemptionGuard, handled_signals, submitit_signal


def _load_chaos():
    """The chaos harness lives in scripts/ (test tooling, not part of the installed package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "chaos.py"
    spec = importlib.util.spec_from_file_location("crelu_chaos_harness", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


_chaos = _load_chaos()
check_files, compare_runs, run_with_kills, train_command = (
    _chaos.check_files, _chaos.compare_runs, _chaos.run_with_kills, _chaos.train_command)

CHAOS = ["experiment=table1/crelu", "model.width_scale=0.125", "schedule.epochs=3", "schedule.milestones=[2]",
         "train.batch_size=32", "train.max_steps_per_epoch=6", "train.checkpoint_every_steps=1",
         "train.deterministic=true", "train.threads=1", "train.quiet=true", "dataset.download=false",
         "dataset.train_subset=300", "dataset.test_subset=100"]


@pytest.fixture
def reference_run(fake_cifar10, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    train(compose_config([*CHAOS, f"dataset.root={fake_cifar10}", f"output.run_dir={out}"]))
    return out


def _env(root):
    return {**os.environ, "CRELU_DATA_ROOT": str(root)}


@pytest.mark.slow
def test_sigkill_at_random_points_resumes_bit_identical(fake_cifar10, reference_run, tmp_path):
    run_dir = tmp_path / "chaos"
    cmd = train_command([*CHAOS, f"output.run_dir={run_dir}"])
    kills = run_with_kills(cmd, run_dir, kills=3, rng=random.Random(7), env=_env(fake_cifar10))
    assert kills == 3
    rec = load_record(run_dir)
    assert rec.status == "finished" and len(rec.data.get("resumes", [])) >= 1
    assert check_files(run_dir) == []
    assert compare_runs(reference_run, run_dir) == []


@pytest.mark.slow
def test_sigterm_checkpoints_at_the_next_step_and_exits(fake_cifar10, reference_run, tmp_path):
    run_dir = tmp_path / "term"
    cmd = train_command([*CHAOS, f"output.run_dir={run_dir}", "train.checkpoint_every_steps=null"])
    proc = subprocess.Popen(cmd, env=_env(fake_cifar10), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not (run_dir / "run.json").exists() or not load_record(run_dir).epochs:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    rec = load_record(run_dir)
    assert rec.status == "interrupted" and rec.data["failure"]["type"] == "Preempted"
    state = load_latest(run_dir)
    assert state["epoch"] >= 1
    subprocess.run(cmd, env=_env(fake_cifar10), check=True, stdout=subprocess.DEVNULL)
    assert compare_runs(reference_run, run_dir) == []


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(fake_cifar10, reference_run, tmp_path,
                                                                 monkeypatch):
    run_dir = tmp_path / "corrupt"
    cfg = compose_config([*CHAOS, f"dataset.root={fake_cifar10}", f"output.run_dir={run_dir}"])
    real, calls = trainer_mod.train_epoch, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(trainer_mod, "train_epoch", dying)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    assert (run_dir / PREV_NAME).exists()
    ck = run_dir / CKPT_NAME
    ck.write_bytes(ck.read_bytes()[:1000])  # truncated, as by a crash of a non-atomic writer
    with pytest.warns(UserWarning, match="latest checkpoint unusable.*resuming from checkpoint.prev.pt"):
        res = train(cfg)
    assert res.status == "finished"
    assert compare_runs(reference_run, run_dir) == []


def test_full_disk_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    target = tmp_path / "run.json"
    atomic_write_json(target, {"status": "running", "epoch": 1})

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_json(target, {"status": "finished", "epoch": 2})
    assert json.loads(target.read_text()) == {"status": "running", "epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no partial temp file left behind


def test_record_from_another_schema_version_is_never_overwritten(fake_cifar10, tiny_overrides, tmp_path):
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    old = {"schema_version": 0, "status": "finished", "final": {"test_error": 9.1}}
    (run_dir / "run.json").write_text(json.dumps(old))
    cfg = compose_config(["experiment=table1/baseline", f"dataset.root={fake_cifar10}", *tiny_overrides,
                          f"output.run_dir={run_dir}"])
    with pytest.raises(SchemaVersionError, match="schema 0.*output.overwrite=true"):
        train(cfg)
    assert json.loads((run_dir / "run.json").read_text()) == old


def test_entrypoint_reports_bad_input_with_one_clear_line(tmp_path):
    env = {**os.environ, "CRELU_DATA_ROOT": str(tmp_path / "nothing")}
    p = subprocess.run([sys.executable, "-m", "crelu.train", "dataset.download=false",
                        f"output.root={tmp_path}/runs"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "CIFAR10 not found" in p.stderr and "CRELU_DATA_ROOT" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "crelu.train", "++model.activation_layers={crelu:[9]}",
                        f"output.root={tmp_path}/runs"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "class maps" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "crelu.train", "optim.lrr=1"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode != 0 and "lrr" in p.stderr


def test_wandb_failure_warns_and_training_continues(fake_cifar10, tiny_overrides, monkeypatch):
    import wandb

    def broken(*a, **k):
        raise RuntimeError("wandb service unreachable")

    monkeypatch.setattr(wandb, "init", broken)
    cfg = compose_config(["experiment=table1/baseline", f"dataset.root={fake_cifar10}", *tiny_overrides,
                          "logger=wandb"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = train(cfg)
    assert res.status == "finished"
    assert any("wandb init failed" in str(w.message) for w in caught)


def test_wandb_offline_run_is_grouped_and_finished(fake_cifar10, tiny_overrides, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_config(["experiment=table1/crelu", f"dataset.root={fake_cifar10}", *tiny_overrides,
                          "logger=wandb", f"logger.dir={tmp_path / 'wandb'}", "protocol=kfold",
                          "protocol.folds=4", "protocol.fold=1"])
    res = train(cfg)
    assert res.status == "finished"
    runs = list((tmp_path / "wandb").rglob("offline-run-*"))
    assert runs, "an offline wandb run directory is written"
    meta = next((tmp_path / "wandb").rglob("wandb-metadata.json"), None)
    assert meta is None or json.loads(meta.read_text())  # readable when present
    assert torch.load(res.run_dir / "test_logits.pt")["logits"].shape[0] == 100


def test_wandb_runs_are_named_grouped_and_tagged_from_the_run_identity(monkeypatch):
    import wandb

    from crelu.results.runkey import run_key, run_meta
    from crelu.training.loggers import make_logger

    seen = {}

    class FakeRun:
        summary: dict = {}

        def log(self, *a, **k):
            pass

        def finish(self, exit_code=0):
            seen["exit_code"] = exit_code

    def fake_init(**kwargs):
        seen.update(kwargs)
        return FakeRun()

    monkeypatch.setattr(wandb, "init", fake_init)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_config(["experiment=table1/crelu_half", "dataset=cifar100", "protocol=kfold", "protocol.fold=7",
                          "logger=wandb"])
    meta = {**run_meta(cfg), "phase": None}
    logger = make_logger(cfg.logger, meta, run_key(cfg), {})
    logger.finish(0)
    assert seen["group"] == "paper/table1/crelu_half/cifar100" and seen["job_type"] == "kfold"  # profile first
    assert {"table1", "crelu_half", "cifar100", "kfold", "fold7"} <= set(seen["tags"])
    assert seen["mode"] == "offline" and seen["resume"] == "allow" and seen["project"] == "crelu-repro"
    assert len(seen["id"]) == 16  # per run directory and attempt: tests/test_wandb.py checks uniqueness
    assert seen["exit_code"] == 0


def _fake_submitit_handler(calls):
    def checkpoint_and_try_requeue(signum, frame):
        calls.append(signum)
        raise SystemExit(0)  # submitit requeues the job, then exits this process

    checkpoint_and_try_requeue.__module__ = "submitit.core.job_environment"
    return checkpoint_and_try_requeue


def test_submitit_requeue_command_survives_slurms_sigterm(monkeypatch):
    """SLURM SIGTERMs every process of a requeued job, the `scontrol requeue` that submitit runs included."""
    sub, out = submitit_signal(), {}

    def checkpoint_and_try_requeue(signum, frame):  # stands in for submitit's: runs a child that gets SIGTERM
        out["child"] = subprocess.run(["sh", "-c", "kill -TERM $$; echo requeued"], capture_output=True, text=True)
        raise SystemExit(0)

    checkpoint_and_try_requeue.__module__ = "submitit.core.job_environment"
    saved = {s: signal.getsignal(s) for s in handled_signals()}
    for s in handled_signals():
        signal.signal(s, checkpoint_and_try_requeue if s == sub else signal.SIG_DFL)
    try:
        guard = PreemptionGuard().__enter__()
        assert guard.submitit_requeue() == (sub, checkpoint_and_try_requeue)
        with pytest.raises(SystemExit):
            guard.hand_over(sub)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    assert out["child"].returncode == 0 and out["child"].stdout.strip() == "requeued"


@pytest.mark.parametrize(("late_sigterm", "sent"), [(False, "submitit"), (True, "submitit"), (False, "SIGUSR1")])
def test_slurm_signal_checkpoints_then_hands_over_to_submitit_requeue(fake_cifar10, reference_run, tmp_path,
                                                                      monkeypatch, late_sigterm, sent):
    sub = submitit_signal()  # the signal the installed submitit requeues on (SIGUSR2 for submitit 1.5)
    assert sub is not None and sub != signal.SIGUSR1 and sub in handled_signals()
    calls = []
    monkeypatch.setattr(signal, "getsignal", lambda s: _fake_submitit_handler(calls) if s == sub
                        else signal.SIG_IGN)  # what submitit installs: its signal -> requeue, TERM -> bypass
    real, seen = trainer_mod.train_epoch, {"n": 0}

    def epoch_then_signal(*a, **k):
        seen["n"] += 1
        if late_sigterm and seen["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # under submitit: checkpoint at the next step and keep going
        if seen["n"] == (3 if late_sigterm else 2):  # SLURM's pre-timeout signal arrives in this epoch
            os.kill(os.getpid(), sub if sent == "submitit" else signal.SIGUSR1)
        return real(*a, **k)

    monkeypatch.setattr(trainer_mod, "train_epoch", epoch_then_signal)
    run_dir = tmp_path / "slurm"
    cfg = compose_config([*CHAOS, f"dataset.root={fake_cifar10}", f"output.run_dir={run_dir}"])
    with pytest.raises(SystemExit) as ei:
        train(cfg)
    assert ei.value.code == 0 and calls == [sub]  # a USR1 is handed to submitit's requeue handler too
    assert load_record(run_dir).status == "interrupted"
    state = load_latest(run_dir)
    stopped_in = 2 if late_sigterm else 1  # epochs completed before the signal's epoch
    assert len(load_record(run_dir).epochs) == stopped_in  # SIGTERM alone did not stop the run
    assert state["epoch"] == stopped_in and state["mid_epoch"]["progress"]["step"] >= 1  # mid-epoch checkpoint
    monkeypatch.undo()
    res = train(cfg)  # the requeued job: same command, resumes mid-epoch
    assert res.resumed_from_epoch == stopped_in
    assert compare_runs(reference_run, run_dir) == []
