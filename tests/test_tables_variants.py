"""One cell = one recipe: the mixture scenario (10 folds of recipe A + 3 newer folds of recipe B) and seeds."""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from crelu.config import compose_config
from crelu.protocols import average, vote_error
from crelu.results.record import RunRecord
from crelu.results.runkey import recipe_id, run_key, variant_id
from crelu.tables import RunIndex, build_table, write_table
from crelu.tables.__main__ import main
from crelu.tables.reference import PaperReference

LABELS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 3)


@functools.cache
def _composed(row: str, kfold: bool, lr: float | None, seed: int) -> str:
    over = [f"experiment=table1/{row}", "dataset=cifar10", f"train.seed={seed}"]
    over += ["protocol=kfold", "protocol.fold=0"] if kfold else ["protocol=single"]
    if lr is not None:
        over.append(f"optim.lr={lr}")
    return json.dumps(OmegaConf.to_container(compose_config(over), resolve=True))


def _config(row: str, job: str, lr: float | None = None, seed: int = 0) -> dict:
    """The resolved config of one table job, as Hydra composes it (composed once per row/recipe/seed)."""
    cfg = json.loads(_composed(row, job.startswith("fold"), lr, seed))
    if job.startswith("fold"):
        cfg["protocol"]["fold"] = int(job[4:])
    return cfg


def _record(root, row, job, err, *, lr=None, seed=0, when="2025-01-01T00:00:00", stored_ids=False, rng=None):
    cfg = _config(row, job, lr, seed)
    meta = {"table": "table1", "row": row, "name": row, "profile": "paper", "dataset": "cifar10",
            "protocol": cfg["protocol"]["name"], "fold": cfg["protocol"]["fold"], "seed": seed,
            "config_hash": run_key(cfg)[-8:], "phase": None}
    if stored_ids:  # records of the new schema store their identity; older ones are computed from the config
        meta.update(recipe=recipe_id(cfg, "d1"), variant=variant_id(cfg, "d1"), data_digest="d1")
    rec = RunRecord(root / run_key(cfg), {
        "status": "finished", "meta": meta, "config": cfg, "started_at": when, "finished_at": when,
        "final": {"test_error": err}, "protocol": {"train_error_full": err / 2, "reached": True},
        "params": 2735626, "data": {"fingerprint": {"train": {"images": 50000, "official": True}}},
        "artifacts": {"test_logits": "test_logits.pt"}, "wandb": {"id": f"w-{row}-{job}-{seed}"},
    })
    rec.save()
    if job.startswith("fold"):
        logits = torch.from_numpy(rng.normal(size=(len(LABELS), 10)).astype(np.float32))
        torch.save({"logits": logits, "labels": torch.from_numpy(LABELS)}, rec.run_dir / "test_logits.pt")
    return rec


@pytest.mark.parametrize("stored_ids", [False, True])
def test_mixture_of_recipes_shows_recipe_a_exactly_and_lists_b(tmp_path, stored_ids):
    rng = np.random.default_rng(0)
    root = tmp_path / "runs"
    a_errs = [9.0 + 0.13 * k for k in range(10)]
    a = [_record(root, "crelu", f"fold{k}", a_errs[k], stored_ids=stored_ids, rng=rng,
                 when=f"2025-01-{k + 1:02d}T00:00:00") for k in range(10)]
    a_single = _record(root, "crelu", "single", 8.4, stored_ids=stored_ids, when="2025-01-01T00:00:00")
    # recipe B (optim.lr=0.05): 3 newer folds and a newer Single; the old code mixed these into A's cell
    b = [_record(root, "crelu", f"fold{k}", 30.0 + k, lr=0.05, stored_ids=stored_ids, rng=rng,
                 when=f"2025-03-{k + 1:02d}T00:00:00") for k in range(3)]
    _record(root, "crelu", "single", 25.0, lr=0.05, stored_ids=stored_ids, when="2025-03-09T00:00:00")

    t = build_table("table1", RunIndex.scan(root, profile="paper"), PaperReference.load())
    avg = t.cell("crelu", "cifar10", "average")
    expected = average(a_errs)
    assert avg.ours == expected["mean"] and avg.ours_se == expected["se"]  # exactly recipe A's numbers
    assert avg.n_runs == 10 and avg.marker == "" and avg.n_seeds == 1
    logits = [torch.load(r.logits_path())["logits"].numpy() for r in a]
    assert t.cell("crelu", "cifar10", "vote").ours == vote_error(logits, LABELS)["prob_avg"]
    assert t.cell("crelu", "cifar10", "single_test").ours == 8.4  # Single from recipe A, not B's newer run
    assert t.cell("crelu", "cifar10", "single_train").ours == 4.2

    rec_a, rec_b = (a[0].meta.get("recipe") or recipe_id(a[0].data["config"])), None
    rec_b = b[0].meta.get("recipe") or recipe_id(b[0].data["config"])
    assert rec_a != rec_b and avg.variant == f"{rec_a}-s0"
    notes = "\n".join(t.notes)
    assert (f"crelu/cifar10: other variant {rec_b}-s0 (recipe {rec_b}, seed 0, partial, 3/10 folds, Average 31.00, "
            f"Single test 25.00) is not in the cell, which shows recipe {rec_a}") in notes

    out = tmp_path / "out"
    write_table(t, out)
    runs = pd.read_csv(out / "table1_runs.csv")
    crelu = runs[runs.row == "crelu"]
    assert set(crelu["variant"]) == {f"{rec_a}-s0", f"{rec_b}-s0"}  # every run names its variant
    assert set(crelu[crelu.used]["variant"]) == {f"{rec_a}-s0"}
    unused = crelu[~crelu.used]
    assert set(unused[unused.metric == "average"]["run_dir"]) == {str(r.run_dir) for r in b}
    assert list(unused[unused.metric == "single_test"]["value"]) == [25.0]
    assert (crelu[crelu.used & (crelu.metric == "single_test")]["run_dir"] == str(a_single.run_dir)).all()
    assert set(crelu[crelu.used & (crelu.metric == "average")]["wandb_id"]) == {f"w-crelu-fold{k}-0" for k in range(10)}
    variants = pd.read_csv(out / "table1_variants.csv")
    v = variants[variants.row == "crelu"].set_index("variant")
    assert v.loc[f"{rec_a}-s0", "folds"] == 10 and bool(v.loc[f"{rec_a}-s0", "used"])
    assert v.loc[f"{rec_b}-s0", "folds"] == 3 and not bool(v.loc[f"{rec_b}-s0", "used"])
    assert v.loc[f"{rec_b}-s0", "average"] == pytest.approx(31.0)


def test_seeds_give_mean_and_t_interval_over_seed_level_numbers(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "runs"
    errs = {s: [10.0 + s + 0.1 * k for k in range(3)] for s in range(3)}
    for s in range(3):
        for k in range(3):
            _record(root, "baseline", f"fold{k}", errs[s][k], seed=s, rng=rng)
    # fold counts come from protocol.folds of the records: 10 here, so 3 folds per seed is partial
    t = build_table("table1", RunIndex.scan(root, profile="paper"), PaperReference.load())
    avg = t.cell("baseline", "cifar10", "average")
    assert avg.n_seeds == 1 and avg.marker == "3/10 folds"  # no complete seed: the best partial variant only
    # with 3-fold records every seed is complete and all three are averaged
    root3 = tmp_path / "runs3"
    for s in range(3):
        for k in range(3):
            cfg = _config("baseline", f"fold{k}", seed=s)
            cfg["protocol"]["folds"] = 3
            rec = RunRecord(root3 / run_key(cfg), {
                "status": "finished", "config": cfg, "final": {"test_error": errs[s][k]},
                "finished_at": "2025-01-01", "meta": {"table": "table1", "row": "baseline", "profile": "paper",
                                                      "dataset": "cifar10", "protocol": "kfold", "fold": k,
                                                      "seed": s, "config_hash": "h"}})
            rec.save()
    t = build_table("table1", RunIndex.scan(root3, profile="paper"), PaperReference.load())
    avg = t.cell("baseline", "cifar10", "average")
    seed_means = [np.mean(errs[s]) for s in range(3)]
    half = 4.302652729911275 * np.std(seed_means, ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert avg.n_seeds == 3 and avg.ours == pytest.approx(np.mean(seed_means))
    assert (avg.ci_low, avg.ci_high) == pytest.approx((11.1 - half, 11.1 + half))
    assert avg.in_ci is True and avg.variant.count(";") == 2  # the paper's 10.20 is inside [8.62, 13.58]
    assert t.samples[("baseline", "cifar10", "average")][(2, 1)] == errs[2][1]


def test_paper_profile_marks_cells_not_trained_on_the_official_full_set(tmp_path, capsys):
    rng = np.random.default_rng(2)
    root = tmp_path / "runs"
    for k in range(10):
        rec = _record(root, "avr", f"fold{k}", 10.0, rng=rng)
        rec.data["config"]["dataset"]["train_subset"] = 10000
        # the fingerprint describes the files the subset is drawn from (all 50,000 official images)
        rec.save()
    single = _record(root, "double", "single", 9.0)
    single.data["data"]["fingerprint"]["train"]["official"] = False
    single.save()
    (root / "junk").mkdir()
    (root / "junk" / "run.json").write_text("{")
    (root / "old").mkdir()
    (root / "old" / "run.json").write_text('{"schema_version": 0, "status": "finished"}')
    t = build_table("table1", RunIndex.scan(root, profile="paper"), PaperReference.load())
    assert t.cell("avr", "cifar10", "average").data_mark == "subset: 10,000 train images"
    assert t.cell("double", "cifar10", "single_test").data_mark == "not the official files: 50,000 train images"
    out = tmp_path / "out"
    assert main(["table1", "--runs", str(root), "--out", str(out)]) == 0
    md = (out / "table1.md").read_text()
    assert "10.00 ± 0.00 ✗ [subset: 10,000 train images]" in md
    err = capsys.readouterr().err
    # every skipped record is named by its path
    assert f"skipped: unreadable run record {root / 'junk' / 'run.json'}" in err
    assert f"skipped: {root / 'old' / 'run.json'} was written with record schema 0" in err
    assert str(root / "junk" / "run.json") in md and str(root / "old" / "run.json") in md
    # other profiles show no data marks (their banner says the numbers are not comparable)
    t = build_table("table1", RunIndex.scan(root, profile="paper"), PaperReference.load(), profile="smoke")
    assert t.cell("avr", "cifar10", "average").data_mark == ""
