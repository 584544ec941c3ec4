"""Row definitions and the paper's reference data files."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from crelu.config.schema import ModelConfig
from crelu.tables.reference import default_data_path, load_paper_params, load_paper_reference
from crelu.tables.rows import REFERENCE_ONLY, ROWS, model_config, row_def

REPO = Path(__file__).resolve().parents[1]


def _stems(table: str) -> set[str]:
    return {p.stem for p in (REPO / "configs" / "experiment" / table).glob("*.yaml")}


def test_rows_are_the_experiment_configs_in_the_papers_order():
    ref = load_paper_reference()
    for table in ("table1", "table2", "table4"):
        assert set(ROWS[table]) == _stems(table), table  # one row per configs/experiment/<table>/*.yaml
        # listed in the paper's order: the order of the paper_reference.csv entries of that table
        paper_order = list(dict.fromkeys(ref.loc[ref.table == table, "model"]))
        assert [rd.paper_model for rd in ROWS[table].values()] == paper_order, table
    assert list(ROWS["table1"]) == ["baseline", "double", "avr", "crelu", "crelu_half"]
    assert [rd.label for rd in ROWS["table1"].values()] == ["Baseline", "+ (double)", "AVR", "CReLU", "+ (half)"]
    assert [ROWS["table2"][r].paper_model for r in ROWS["table2"]] == [
        "vgg",
        "vgg_crelu_conv1",
        "vgg_crelu_conv1_3",
        "vgg_crelu_conv1_3_5",
    ]
    # Table 5 = the Table 4 rows whose config says also_in: {table5: <label>}, with that label
    also = {p.stem for p in (REPO / "configs" / "experiment" / "table4").glob("*.yaml") if "table5" in
            (yaml.safe_load(p.read_text())["experiment"].get("also_in") or {})}
    assert set(ROWS["table5"]) == also == {"baseline", "crelu_all", "crelu_conv1_4_7", "crelu_conv1_4"}
    assert ROWS["table5"]["baseline"].label == "AllConvB" and ROWS["table4"]["baseline"].label == "Baseline"


def test_row_models_are_the_composed_experiment_configs():
    r8 = list(range(1, 9))
    base = row_def("table1", "baseline").model
    assert base["family"] == "convpool_c" and base["activation_layers"] == {} and base["width_mult"] == 1.0
    assert row_def("table1", "double").model["width_mult"] == 2.0
    assert row_def("table1", "avr").model["activation_layers"] == {"avr": r8}
    assert row_def("table1", "crelu").model["activation_layers"] == {"crelu": r8}
    half = row_def("table1", "crelu_half").model
    assert half["activation_layers"] == {"crelu": r8} and half["halve_layers"] == r8
    t2 = row_def("table2", "crelu_conv1_3").model
    assert (t2["family"], t2["init"], t2["activation_layers"], t2["halve_layers"]) == (
        "vgg", "msr_fanout", {"crelu": [1, 3]}, [1, 3])
    t4 = row_def("table4", "crelu_conv1_4").model
    assert (t4["family"], t4["dropout_input"], t4["activation_layers"]) == ("allcnn_b", 0.0, {"crelu": [1, 2, 3, 4]})
    assert row_def("table4", "crelu_all").model["halve_layers"] == list(range(1, 13))
    assert row_def("table4", "avr_conv1_9").model["activation_layers"] == {"avr": list(range(1, 10))}
    for row, rd in ROWS["table5"].items():
        assert rd.model == ROWS["table4"][row].model and rd.sources == ("table5", "table4")
    cfg = model_config("table1", "crelu_half")
    assert isinstance(cfg, ModelConfig) and cfg.halve_layers == r8
    with pytest.raises(KeyError, match="unknown table row"):
        row_def("table1", "nope")


def test_reference_has_every_row_and_metric():
    ref = load_paper_reference()
    assert len(ref) == 100 + 30
    keys = set(zip(ref.table, ref.dataset, ref.model, ref.metric))
    wanted = {
        "table1": ("single_train", "single_test", "average", "vote"),
        "table2": ("single_test", "average", "vote"),
        "table4": ("top1_center", "top5_center", "top1_10patch", "top5_10patch"),
        "table5": ("top1_center", "top5_center", "top1_10patch", "top5_10patch", "params_m"),
    }
    for table, metrics in wanted.items():
        for rd in ROWS[table].values():
            for ds in rd.datasets:
                for m in metrics:
                    assert (table, ds, rd.paper_model, m) in keys, (table, ds, rd.paper_model, m)
    avg = ref[
        (ref.table == "table1")
        & (ref.model == "crelu")
        & (ref.dataset == "cifar100")
        & (ref.metric == "average")
    ].iloc[0]
    assert (avg.value, avg.stderr) == (33.76, 0.12)


def test_table5_params_agree_between_files():
    ref = load_paper_reference()
    params = load_paper_params()
    p5 = ref[(ref.table == "table5") & (ref.metric == "params_m")]
    names = set(ROWS["table5"]) | {n for n, _ in REFERENCE_ONLY["table5"]}
    assert set(p5.model) == names
    for r in p5.itertuples():
        (n,) = params[(params.table == "table5") & (params.row == r.model)].paper_params
        assert n == round(r.value * 1e6)
    t1 = params[params.table == "table1"]
    assert len(t1) == 10
    assert dict(zip(t1[t1.dataset == "cifar10"].row, t1[t1.dataset == "cifar10"].paper_params)) == {
        "baseline": 1_400_000,
        "double": 5_600_000,
        "avr": 1_400_000,
        "crelu": 2_800_000,
        "crelu_half": 700_000,
    }


def test_reference_csv_is_appendix_b_verbatim():
    spec = next(
        (
            p
            for p in (REPO / "shared" / "PAPER_SPEC.md", REPO.parent / "shared" / "PAPER_SPEC.md")
            if p.is_file()
        ),
        None,
    )
    if spec is None:
        pytest.skip("PAPER_SPEC.md not available")
    block = re.search(r"## Appendix B.*?```csv\n(.*?)```", spec.read_text(), re.S).group(1)
    ours = default_data_path("paper_reference.csv").read_text()
    assert ours.startswith(block)
    extra = pd.read_csv(default_data_path("paper_reference.csv")).iloc[100:]
    assert set(extra.table) == {5}
