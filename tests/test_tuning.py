"""make tune: learning rates picked on the hold-out (never the test set), consumed through optim.lr_from."""

from __future__ import annotations

import csv

import pytest

from crelu.config import compose_config
from crelu.config.schema import ConfigError
from crelu.protocols.runner import run
from crelu.protocols.tuning import apply_tuned, lr_grid, main, pick, read_picks, tuning_points
from crelu.results.record import load_record


def test_the_grid_comes_from_the_rows_configs():
    assert lr_grid("table1") == [0.25, 0.1, 0.05, 0.01]  # Springenberg et al.'s grid, as the paper used it
    with pytest.raises(ConfigError, match="no optim.lr_grid"):
        lr_grid("table2")  # the VGG recipe fixes its learning rate


def test_pick_ignores_diverged_points_and_breaks_ties_on_the_loss():
    pts = [{"row": "r", "dataset": "d", "lr": 0.25, "val_error": None, "val_loss": None, "diverged": True},
           {"row": "r", "dataset": "d", "lr": 0.1, "val_error": 20.0, "val_loss": 0.9, "diverged": False},
           {"row": "r", "dataset": "d", "lr": 0.05, "val_error": 20.0, "val_loss": 0.7, "diverged": False},
           {"row": "r", "dataset": "d", "lr": 0.01, "val_error": 35.0, "val_loss": 0.5, "diverged": False}]
    assert pick(pts)[("r", "d")]["lr"] == 0.05
    assert pick(pts[:1]) == {}


def test_tune_runs_pick_on_the_hold_out_and_the_table_job_trains_at_the_pick(fake_cifar10, tiny_overrides, tmp_path):
    base = ["experiment=table1/baseline", f"dataset.root={fake_cifar10}", *tiny_overrides, "protocol.holdout=80",
            "protocol.job=tune"]
    for lr in ("0.05", "0.01", "1e30"):
        try:
            run(compose_config([*base, f"optim.lr={lr}"]))
        except FloatingPointError:
            assert lr == "1e30"  # diverges: recorded, never picked
    runs = tmp_path / "runs"
    points, notes = tuning_points(runs, "table1")
    assert sorted(p["lr"] for p in points) == [0.01, 0.05, 1e30] and not notes
    by_lr = {p["lr"]: p for p in points}
    assert by_lr[1e30]["diverged"] and not by_lr[1e30]["picked"]
    for lr in (0.05, 0.01):  # scored on the 80-image hold-out, not on the 100 test images
        rec = load_record(by_lr[lr]["run_dir"])
        assert rec.meta["protocol"] == "tune" and rec.data["data"]["val_size"] == 80
        assert rec.data["data"]["train_size"] == 320 and by_lr[lr]["val_error"] == rec.final["val_error"]
    best = min((by_lr[0.05], by_lr[0.01]), key=lambda p: (p["val_error"], p["val_loss"]))
    assert best["picked"] and sum(p["picked"] for p in points) == 1

    out = tmp_path / "tuning"
    assert main(["summarize", "table1", "--runs", str(runs), "--out", str(out)]) == 0
    with open(out / "table1.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["diverged"] for r in rows} == {"True", "False"} and (out / "table1.md").exists()
    picks = read_picks(out / "table1.csv")
    assert picks == {("table1", "baseline", "cifar10"): {"lr": best["lr"], "init_scale": 0.5}}

    job = [f"dataset.root={fake_cifar10}", "experiment=table1/baseline", *tiny_overrides, "protocol=kfold",
           "protocol.fold=0", "protocol.folds=3", "optim.lr=0.123", f"optim.lr_from={out / 'table1.csv'}"]
    res = run(compose_config(job))
    assert res.record["config"]["optim"]["lr"] == best["lr"]  # visible in the run record
    assert res.record["config"]["optim"]["lr_from"] == str(out / "table1.csv")
    with pytest.raises(ConfigError, match="no picked learning rate for table1/crelu on cifar10"):
        apply_tuned(compose_config([*job, "experiment=table1/crelu"]))


def test_the_hydra_objective_is_the_validation_error_never_the_test_error(fake_cifar10, tiny_overrides):
    from crelu.train import hydra_main

    base = ["experiment=table1/baseline", f"dataset.root={fake_cifar10}", *tiny_overrides]
    fold = compose_config([*base, "protocol=kfold", "protocol.fold=0", "protocol.folds=3"])
    value = hydra_main(fold)  # a DictConfig argument calls the task function directly
    rec = run(fold)  # skipped: the finished record
    assert rec.skipped and value == rec.final["val_error"] != rec.final["test_error"]
    assert hydra_main(compose_config(base)) is None  # protocol=full has no validation split
