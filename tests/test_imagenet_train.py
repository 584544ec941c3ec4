"""Every All-CNN-B row of Tables 4/5 trains end to end on a generated ImageFolder; the tables build from it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from tests.test_imagenet_data import write_tiny

from crelu.config import compose_config
from crelu.config.experiments import table_experiments
from crelu.models import build_model
from crelu.results.record import load_record
from crelu.tables import RunIndex, build_table
from crelu.tables.reference import PaperReference
from crelu.tables.rows import ROWS
from crelu.training import train

REPO = Path(__file__).resolve().parents[1]
TABLE4_ROWS = sorted(p.stem for p in (REPO / "configs" / "experiment" / "table4").glob("*.yaml"))
METRICS = ("top1_center", "top5_center", "top1_10patch", "top5_10patch")


def tiny_overrides(root: Path, out: Path) -> list[str]:
    """The tiny set (4 classes, 24 train / 12 val JPEGs): 67 px crops of 76 px squares, quarter width, 2 steps."""
    return [f"dataset.root={root}", "dataset.num_classes=4", "dataset.image_size=67", "dataset.resize=76",
            "dataset.workers=0", "model.width_scale=0.25", "schedule.epochs=1", "train.batch_size=8",
            "train.eval_batch_size=12", "train.max_steps_per_epoch=2", "train.quiet=true",
            "train.deterministic=true", f"output.root={out}"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("tiny_imagenet_train"))


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("imagenet_runs")
    results = {row: train(compose_config([f"experiment=table4/{row}", *tiny_overrides(tiny, out)]))
               for row in TABLE4_ROWS}
    return out, results


def test_the_nine_rows_have_experiment_configs():
    assert sorted(ROWS["table4"]) == TABLE4_ROWS  # the table's rows are the configs' files


@pytest.mark.parametrize("row", TABLE4_ROWS)
def test_row_trains_and_records_centre_and_10patch_errors(runs, row):
    _, results = runs
    res = results[row]
    assert res.status == "finished"
    rec = load_record(res.run_dir)
    assert rec.meta["table"] == "table4" and rec.meta["row"] == row and rec.meta["protocol"] == "full"
    assert rec.meta["dataset"] == "imagenet" and rec.data["data"]["train_size"] == 24
    assert rec.data["data"]["test_size"] == 12
    cfg = compose_config([f"experiment=table4/{row}", "model.width_scale=0.25"])
    assert rec.data["params"] == sum(p.numel() for p in build_model(cfg.model, 4).parameters())
    f = res.final
    assert math.isfinite(f["train_loss"]) and len(rec.epochs) == 1
    for key in METRICS:
        assert 0.0 <= f[key] <= 100.0 and (f[key] * 12 / 100).is_integer()  # whole images out of 12
    assert f["top1_center"] == pytest.approx(f["test_error"])  # "test" is the centre crop
    assert f["top5_center"] == 0.0 == f["top5_10patch"]  # 4 classes: the label is always in the top 5
    logits = torch.load(res.run_dir / "test_logits.pt")
    assert logits["logits"].shape == (12, 4)


def test_table4_and_table5_build_from_the_records(runs):
    out, results = runs
    index = RunIndex.scan(out / "paper", profile="paper")
    ref = PaperReference.load()
    t4 = build_table("table4", index, ref)
    filled = {(c.row, c.metric): c.ours for c in t4.cells if c.n_runs}
    assert len(filled) == 9 * 4
    for row in TABLE4_ROWS:
        for key in METRICS:
            assert filled[(row, key)] == pytest.approx(results[row].final[key])
    t5 = build_table("table5", index, ref)
    rows5 = {c.row for c in t5.cells if c.n_runs and not c.reference_only}
    assert rows5 == set(ROWS["table5"])


def test_eval_mode_picks_the_measures(tiny, tmp_path):
    base = ["experiment=table4/baseline", *tiny_overrides(tiny, tmp_path)]
    centre = train(compose_config([*base, "protocol.eval_mode=center"])).final
    patches = train(compose_config([*base, "protocol.eval_mode=tenpatch"])).final
    assert "top1_center" in centre and "top1_10patch" not in centre
    assert "top1_10patch" in patches and "top1_center" not in patches


def test_sweeps_and_smoke_profile_fit_the_tiny_set():
    for table in ("table4", "table5"):
        spec = yaml.safe_load((REPO / "configs" / "table" / f"{table}.yaml").read_text())
        assert spec["hydra"]["sweeper"]["params"]["experiment"].startswith("${crelu_rows:")  # rows from configs
        exps = table_experiments(table).split(",")
        assert sorted(e.split("/")[1] for e in exps) == sorted(ROWS[table])
        assert all((REPO / "configs" / "experiment" / f"{e}.yaml").is_file() for e in exps)
        assert "protocol.job" not in spec["hydra"]["sweeper"]["params"]
    cfg = compose_config(["experiment=table4/crelu_all", "profile=smoke_imagenet"])
    assert cfg.experiment.profile == "smoke" and cfg.model.width_scale == 0.25
    assert (cfg.dataset.num_classes, cfg.dataset.image_size, cfg.dataset.resize) == (4, 67, 76)
    assert cfg.train.batch_size <= 24 and cfg.train.max_steps_per_epoch == 3
