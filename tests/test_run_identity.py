"""Run identity and honest lifecycle: per-job seeds, the data in the run key, the run-directory lock, no 0-step run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from crelu.config import compose_config
from crelu.config.schema import ConfigError
from crelu.data.fingerprint import data_fingerprint
from crelu.data.synthetic import write_fake_cifar
from crelu.models import build_model
from crelu.protocols.runner import run
from crelu.results.record import load_record
from crelu.training import train
from crelu.training.lock import RunLock
from crelu.training.run import resolve_run_dir
from crelu.training.seeds import job_seeds


def _cfg(root, over, *extra):
    return compose_config(["experiment=table1/baseline", f"dataset.root={root}", *over, *extra])


def test_every_job_of_a_row_has_its_own_seeds_by_one_rule(fake_cifar10, tiny_overrides):
    folds = [job_seeds(_cfg(fake_cifar10, tiny_overrides, "protocol=kfold", f"protocol.fold={f}")) for f in range(10)]
    single = _cfg(fake_cifar10, tiny_overrides, "protocol=single")
    phases = [job_seeds(single, "phase1"), job_seeds(single, "phase2")]
    inits = [s.init for s in [*folds, *phases]]
    assert len(set(inits)) == 12 and {s.rule for s in folds} == {"per-job"}
    assert len({s.dropout for s in folds} | {s.data for s in folds}) == 20
    assert [s.job for s in phases] == ["single-phase1", "single-phase2"] and folds[7].job == "fold7"
    again = job_seeds(_cfg(fake_cifar10, tiny_overrides, "protocol=kfold", "protocol.fold=7"))
    assert again == folds[7]  # a pure function of (train.seed, job)
    other_seed = job_seeds(_cfg(fake_cifar10, tiny_overrides, "protocol=kfold", "protocol.fold=7", "train.seed=1"))
    assert other_seed.init != folds[7].init
    shared = [job_seeds(_cfg(fake_cifar10, tiny_overrides, "protocol=kfold", f"protocol.fold={f}",
                             "train.job_seeds=false")) for f in (0, 7)]
    assert shared[0].init == shared[1].init == 0 and shared[0].rule == "shared"


def _initial_conv1(cfg) -> torch.Tensor:
    s = job_seeds(cfg)
    torch.manual_seed(s.init)
    return next(iter(build_model(cfg.model, 10).parameters())).detach().clone()  # conv1's weight


def test_fold_0_and_fold_7_start_from_different_weights(fake_cifar10, tiny_overrides, tmp_path):
    over = [*tiny_overrides, "protocol=kfold", "schedule.epochs=1"]
    runs = [train(_cfg(fake_cifar10, over, f"protocol.fold={f}")) for f in (0, 7)]
    recs = [r.record for r in runs]
    assert recs[0]["seeds"]["job"] == "fold0" and recs[1]["seeds"]["job"] == "fold7"
    assert recs[0]["seeds"]["init"] != recs[1]["seeds"]["init"]
    w = [_initial_conv1(_cfg(fake_cifar10, over, f"protocol.fold={f}")) for f in (0, 7)]
    assert not torch.equal(w[0], w[1])
    shared = [_initial_conv1(_cfg(fake_cifar10, over, f"protocol.fold={f}", "train.job_seeds=false")) for f in (0, 7)]
    assert torch.equal(shared[0], shared[1])  # the knob restores the shared init of earlier versions


def test_the_run_key_includes_the_data(tmp_path, tiny_overrides):
    small = write_fake_cifar(tmp_path / "small", "cifar10", n_train=200, n_test=50, seed=5)
    large = write_fake_cifar(tmp_path / "large", "cifar10", n_train=300, n_test=50, seed=5)
    same_as_small = write_fake_cifar(tmp_path / "copy", "cifar10", n_train=200, n_test=50, seed=5)
    dirs = [resolve_run_dir(_cfg(r, tiny_overrides))[0] for r in (small, large, same_as_small)]
    assert dirs[0] != dirs[1]  # the same command on other data never shares a directory
    assert dirs[0] == dirs[2]  # the same images in another folder are the same data
    fp = data_fingerprint(_cfg(large, tiny_overrides).dataset)
    assert fp["train"]["images"] == 300 and sum(fp["train"]["class_counts"]) == 300
    assert fp["train"]["official"] is False and len(fp["digest"]) == 8
    res = train(_cfg(small, tiny_overrides, "schedule.epochs=1"))
    rec = json.loads((res.run_dir / "run.json").read_text())
    assert rec["data"]["fingerprint"]["digest"] == rec["meta"]["data_digest"]
    assert rec["meta"]["variant"].endswith("-s0") and rec["meta"]["recipe"] in rec["meta"]["variant"]


def test_a_run_that_would_take_no_step_is_refused_naming_the_key(fake_cifar10, tiny_overrides):
    with pytest.raises(ConfigError, match=r"train.batch_size=1000 is larger than the 400 training images"):
        train(_cfg(fake_cifar10, tiny_overrides, "train.batch_size=1000"))
    run_dir = resolve_run_dir(_cfg(fake_cifar10, tiny_overrides, "train.batch_size=1000"))[0]
    assert not (run_dir / "run.json").exists()  # nothing recorded, let alone "finished"


def test_the_lock_names_its_owner_and_times_out(tmp_path):
    held = RunLock(tmp_path / "run")
    assert held.acquire(0) is False
    code = ("import sys; from pathlib import Path; from crelu.training.lock import RunLock, RunLockedError\n"
            "try:\n    RunLock(Path(sys.argv[1])).acquire(0.5)\nexcept RunLockedError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                         timeout=120).stdout
    assert "is locked by" in out and f":{os.getpid()}" in out
    held.release()
    assert RunLock(tmp_path / "run").acquire(0) is False  # free again


@pytest.mark.slow
def test_two_identical_jobs_launched_together_train_once(fake_cifar10, tiny_overrides, tmp_path):
    over = [*[o for o in tiny_overrides if not o.startswith("output.root")], f"dataset.root={fake_cifar10}",
            "experiment=table1/baseline", f"output.root={tmp_path / 'runs'}", "schedule.epochs=3",
            "train.max_steps_per_epoch=6"]
    cmd = [sys.executable, "-m", "crelu.train", *over]
    procs = [subprocess.Popen([*cmd, f"hydra.run.dir={tmp_path / f'h{i}'}"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("is locked by" in o for o in outs) == 1, outs  # the second waited for the first
    assert sum("skipping" in o for o in outs) == 1, outs  # ... and then found the run finished
    run_dir = resolve_run_dir(compose_config(over))[0]
    rec = load_record(run_dir)
    assert rec.status == "finished" and len(rec.epochs) == 3 and "resumes" not in rec.data


def test_single_phases_get_their_own_seeds_and_the_top_record_keeps_the_variant(fake_cifar10, tiny_overrides):
    res = run(_cfg(fake_cifar10, tiny_overrides, "protocol=single", "protocol.holdout=80"))
    p1, p2 = load_record(res.run_dir / "phase1"), load_record(res.run_dir / "phase2")
    assert p1.data["seeds"]["init"] != p2.data["seeds"]["init"]
    assert res.record["meta"]["variant"] == p1.meta["variant"] == p2.meta["variant"]
