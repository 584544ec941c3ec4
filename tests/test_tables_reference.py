"""Row definitions and the paper's reference data files."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from crelu.config.schema import ModelConfig
from crelu.tables.reference import default_data_path, load_paper_params, load_paper_reference
from crelu.tables.rows import REFERENCE_ONLY, ROWS, model_config, row_def

REPO = Path(__file__).resolve().parents[1]


def test_rows_cover_the_paper_tables():
    assert list(ROWS["table1"]) == ["baseline", "double", "avr", "crelu", "crelu_half"]
    assert list(ROWS["table2"]) == ["vgg", "crelu_conv1", "crelu_conv1_3", "crelu_conv1_3_5"]
    assert list(ROWS["table4"]) == [
        "baseline",
        "avr_conv1_4",
        "avr_conv1_7",
        "avr_conv1_9",
        "crelu_conv1_4_7",
        "crelu_conv1_4",
        "crelu_conv1_7",
        "crelu_conv1_9",
        "crelu_all",
    ]
    assert set(ROWS["table5"]) == {"baseline", "crelu_all", "crelu_conv1_4_7", "crelu_conv1_4"}
    assert [ROWS["table2"][r].paper_model for r in ROWS["table2"]] == [
        "vgg",
        "vgg_crelu_conv1",
        "vgg_crelu_conv1_3",
        "vgg_crelu_conv1_3_5",
    ]


def test_row_models():
    r8 = list(range(1, 9))
    assert row_def("table1", "baseline").model == {"family": "convpool_c"}
    assert row_def("table1", "double").model == {"family": "convpool_c", "width_mult": 2.0}
    assert row_def("table1", "avr").model == {"family": "convpool_c", "activation": "avr"}
    assert row_def("table1", "crelu").model == {"family": "convpool_c", "activation_layers": {"crelu": r8}}
    assert row_def("table1", "crelu_half").model == {
        "family": "convpool_c",
        "activation_layers": {"crelu": r8},
        "halve_layers": r8,
    }
    assert row_def("table2", "crelu_conv1_3").model == {
        "family": "vgg",
        "init": "msr_fanout",
        "activation_layers": {"crelu": [1, 3]},
        "halve_layers": [1, 3],
    }
    assert row_def("table4", "crelu_conv1_4").model == {
        "family": "allcnn_b",
        "dropout_input": 0.0,
        "activation_layers": {"crelu": [1, 2, 3, 4]},
    }
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
