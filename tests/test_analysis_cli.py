"""``python -m crelu.analysis`` end to end on run directories made here (nothing is trained)."""

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from crelu.analysis.cli import main
from crelu.analysis.runs import select_run
from crelu.config.schema import Config
from crelu.data import write_fake_cifar
from crelu.models import build_model
from crelu.results.record import RECORD_SCHEMA_VERSION, RunRecord, iter_records
from crelu.results.runkey import run_key, run_meta
from crelu.training.checkpoint import save_checkpoint

# generated CIFAR copies are "modified" datasets by design
pytestmark = pytest.mark.filterwarnings("ignore::crelu.data.ModifiedDatasetWarning")

REPO = Path(__file__).resolve().parents[1]


def make_run(
    runs: Path,
    table: str,
    row: str,
    dataset: str,
    family: str,
    layers: dict,
    width: float,
    data_root: Path,
    status: str = "finished",
    seed: int = 0,
    stats: tuple[list[float], list[float]] | None = None,
) -> Path:
    cfg = OmegaConf.structured(Config)
    cfg.experiment.table, cfg.experiment.row, cfg.experiment.profile = table, row, "smoke"
    cfg.dataset.name, cfg.dataset.root = dataset, str(data_root)
    if dataset == "imagenet":
        cfg.dataset.image_size = 227
    cfg.model.family, cfg.model.activation_layers, cfg.model.width_mult = family, layers, width
    cfg.train.seed = seed
    model = build_model(cfg.model, cfg.dataset.num_classes)
    run_dir = runs / "smoke" / run_key(cfg)
    run_dir.mkdir(parents=True)
    save_checkpoint(run_dir, {"epoch": 1, "config": OmegaConf.to_container(cfg), "model": model.state_dict()})
    record = {"schema_version": RECORD_SCHEMA_VERSION, "status": status, "meta": run_meta(cfg)}
    if stats is not None:  # what the trainer stores: the normalisation the run trained with
        record["data"] = {"mean": stats[0], "std": stats[1]}
    RunRecord(run_dir, record).save()
    return run_dir


@pytest.fixture
def runs(tmp_path):
    data = write_fake_cifar(tmp_path / "data", "cifar10", n_train=200, n_test=120, seed=0)
    root = tmp_path / "runs"
    crelu8 = {"crelu": list(range(1, 9))}
    make_run(root, "table1", "baseline", "cifar10", "convpool_c", {}, 0.125, data)
    stats = ([0.45, 0.5, 0.55], [0.25, 0.26, 0.27])
    make_run(root, "table1", "crelu", "cifar10", "convpool_c", crelu8, 0.125, data, stats=stats)
    make_run(root, "table1", "crelu", "cifar10", "convpool_c", crelu8, 0.125, data, status="running", seed=1)
    make_run(
        root, "table4", "crelu_conv1_7", "imagenet", "allcnn_b", {"crelu": list(range(1, 8))}, 0.0625, data
    )
    return root


def test_select_run_prefers_finished_runs_with_checkpoints(runs):
    records = [r for r in iter_records(runs)]
    chosen = select_run(records, "table1", "crelu", "cifar10")
    assert chosen is not None and chosen.meta["seed"] == 0 and chosen.status == "finished"
    assert select_run(records, "table1", "crelu", "cifar100") is None
    assert select_run(records, "table1", "crelu", "cifar10", profile="paper") is None


def test_cli_all_end_to_end(runs, tmp_path, capsys):
    out, res = tmp_path / "figures", tmp_path / "results"
    rc = main(
        [
            "all",
            "--runs",
            str(runs),
            "--out",
            str(out),
            "--results",
            str(res),
            "--device",
            "cpu",
            "--paper-table6",
            str(REPO / "results" / "paper_table6.csv"),
            "--no-progress",
            "--inv-images",
            "100",
            "--inv-top",
            "2",
            "--inv-layers",
            "1",
            "3",
            "--families",
            "translation",
            "--max-shift",
            "2",
            "--recon-images",
            "1",
            "--recon-layers",
            "1",
            "--cg-iters",
            "40",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    for stem in (
        "pairing_cifar10",
        "pairing_filters_cifar10_baseline",
        "invariance_cifar10",
        "reconstruction_cifar10",
    ):
        for ext in ("png", "pdf"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000, stem
    for name in (
        "pairing_cifar10.csv",
        "invariance_cifar10.csv",
        "reconstruction_cifar10.csv",
        "reconstruction_cifar10.json",
        "table6.csv",
        "table6.md",
        "table6_cifar10.md",
    ):
        assert (res / name).stat().st_size > 0, name
        assert f"wrote {res / name}" in text
    assert "skipped: pairing: no finished run for table4/crelu_conv1_4 on imagenet under" in text
    assert "skipped: table6: no finished run for table1/crelu on cifar100 under" in text
    md = (res / "table6.md").read_text()
    assert "| conv1 | 0.372 ± 0.372 |" in md and "| conv7 | 0.131 ± 0.122 |" in md
    inv = (res / "invariance_cifar10.csv").read_text().splitlines()
    assert (
        inv[0] == "model,run_dir,layer,readout,family,score,units_scored" and len(inv) == 1 + 2 * 2 * 2
    )  # models x layers x (family + mean)
    assert any(",conv3,pool1,translation," in r for r in inv)  # conv3 read after max-pool 1 (INFERRED)
    rec = (res / "reconstruction_cifar10.csv").read_text().splitlines()
    assert len(rec) == 1 + 2  # 2 models x 1 layer x 1 image
    crelu_conv1 = next(r for r in rec if r.startswith("table1/crelu") and ",conv1," in r)
    assert float(crelu_conv1.split(",")[4]) < 1e-2  # 12 filters on 3 channels: conv1 is injective


def test_cli_missing_checkpoints_for_one_analysis_still_runs_the_other(tmp_path, capsys):
    root = tmp_path / "runs"
    make_run(root, "table4", "crelu_conv1_7", "imagenet", "allcnn_b", {"crelu": [1, 2]}, 0.0625, tmp_path)
    rc = main(["table6", "--runs", str(root), "--results", str(tmp_path / "res"), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0 and (tmp_path / "res" / "table6.csv").exists()
    assert "warning:" not in text  # the repository's results/paper_table6.csv is found from any --results
    assert "0.372" in (tmp_path / "res" / "table6.md").read_text()  # paper's conv1 pair value beside ours
    rc = main(["invariance", "--runs", str(root), "--results", str(tmp_path / "res"), "--no-progress"])
    assert rc == 1
    assert (
        "skipped: invariance: no finished run for table1/baseline on cifar10 under" in capsys.readouterr().out
    )


def test_module_entry_point_exits_nonzero_when_nothing_can_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "crelu.analysis", "all", "--runs", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "nothing could run" in proc.stderr
    assert proc.stdout.count("skipped: ") >= 4
