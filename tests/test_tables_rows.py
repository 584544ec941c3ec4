"""A table row is declared once: one YAML file under configs/experiment/<table>/ puts it in the sweep and the table."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crelu.config.experiments import table_experiments
from crelu.results.record import RunRecord
from crelu.tables import RunIndex, build_table
from crelu.tables.reference import PaperReference
from crelu.tables.rows import ROWS, table_rows

REPO = Path(__file__).resolve().parents[1]

NEW_ROW = """\
# @package _global_
# A new Table 1 row: CReLU on conv1..conv4 only.
defaults:
  - override /model: convpool_c
  - override /optim: sgd_convpool
  - override /schedule: convpool
experiment:
  table: table1
  row: crelu_conv1_4
  name: table1-crelu_conv1_4
  label: "CReLU (conv1-4)"
model:
  activation_layers: {crelu: [1, 2, 3, 4]}
"""


@pytest.fixture()
def configs(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "configs"
    shutil.copytree(REPO / "configs", root)
    (root / "experiment" / "table1" / "crelu_conv1_4.yaml").write_text(NEW_ROW)
    monkeypatch.setenv("CRELU_CONFIG_DIR", str(root))
    return root


def test_a_new_yaml_file_is_a_new_row_of_the_sweep_and_the_table(configs, tmp_path):
    # the table's rows: the five paper rows (paper order), then the new one
    rows = ROWS["table1"]
    assert list(rows) == ["baseline", "double", "avr", "crelu", "crelu_half", "crelu_conv1_4"]
    assert rows["crelu_conv1_4"].label == "CReLU (conv1-4)"
    assert rows["crelu_conv1_4"].model["activation_layers"] == {"crelu": [1, 2, 3, 4]}
    assert "crelu_conv1_4" not in table_rows(REPO / "configs")["table1"]  # the repo's own tree is untouched
    # the sweep: ${crelu_rows:table1} in configs/table/table1.yaml lists it
    assert "table1/crelu_conv1_4" in table_experiments("table1").split(",")

    # the table: a finished run of the row fills its cells (paper values: none, so Δ stays empty)
    run_dir = tmp_path / "runs" / "table1" / "crelu_conv1_4" / "cifar10" / "single" / "seed0-x"
    RunRecord(run_dir, {"status": "finished", "meta": {"table": "table1", "row": "crelu_conv1_4",
                                                      "profile": "paper", "dataset": "cifar10",
                                                      "protocol": "single", "fold": None, "seed": 0,
                                                      "config_hash": "x", "phase": None},
                        "final": {"test_error": 12.5}, "protocol": {"train_error_full": 3.0}}).save()
    t = build_table("table1", RunIndex.scan(tmp_path / "runs", profile="paper"), PaperReference.load())
    c = t.cell("crelu_conv1_4", "cifar10", "single_test")
    assert c.ours == 12.5 and c.label == "CReLU (conv1-4)" and c.diff != c.diff  # NaN: no paper value


@pytest.mark.slow
def test_the_training_cli_sweeps_the_new_row(configs, tmp_path):
    """The real ``python -m crelu.train -m table=table1`` (Hydra multirun, joblib) launches the new row too."""
    env = {**os.environ, "CRELU_CONFIG_DIR": str(configs), "CRELU_DATA_ROOT": str(tmp_path / "nodata")}
    cmd = [sys.executable, "-m", "crelu.train", "-m", "table=table1", "profile=smoke", "dataset=cifar10",
           "protocol.job=single", f"output.root={tmp_path / 'runs'}", f"hydra.sweep.dir={tmp_path / 'h'}",
           "hydra/launcher=joblib", "hydra.launcher.n_jobs=1"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    log = p.stdout + p.stderr
    jobs = [ln for ln in log.splitlines() if "\t#" in ln and "experiment=table1/" in ln]
    assert len(jobs) == 6, log[-3000:]  # the five paper rows and the new one
    assert any("experiment=table1/crelu_conv1_4" in ln for ln in jobs)
    assert p.returncode != 0 and "CIFAR10 not found" in log  # no data here: every job stops at loading it
