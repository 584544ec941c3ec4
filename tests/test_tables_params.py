"""Parameter counts of every paper model against the paper (PAPER_SPEC §2.4 tolerances)."""

from __future__ import annotations

import pandas as pd
import pytest

from crelu.tables import write_params
from crelu.tables.params import count_params, params_frame
from crelu.tables.reference import PaperReference


@pytest.fixture(scope="module")
def ref() -> PaperReference:
    return PaperReference.load()


@pytest.fixture(scope="module")
def df(ref) -> pd.DataFrame:
    return params_frame(ref)


def _n(df, table, row, dataset) -> int:
    sel = df[(df.table == table) & (df.row == row) & (df.dataset == dataset)]
    assert len(sel) == 1, (table, row, dataset)
    return int(sel.params.iloc[0])


def test_table1_ratios(df):
    # PAPER_SPEC §2.4's exact-ratio rule, stated for the 10-class models
    base = _n(df, "table1", "baseline", "cifar10")
    assert _n(df, "table1", "crelu", "cifar10") / base == pytest.approx(2.00, abs=0.01)  # [1.99, 2.01]
    assert _n(df, "table1", "double", "cifar10") / base == pytest.approx(3.99, abs=0.01)  # [3.98, 4.00]
    assert _n(df, "table1", "crelu_half", "cifar10") / base == pytest.approx(0.50, abs=0.01)  # [0.49, 0.51]
    for ds in ("cifar10", "cifar100"):
        assert _n(df, "table1", "avr", ds) == _n(df, "table1", "baseline", ds)
    # 100 classes: the classifier conv only doubles with "double" (192->384 inputs), so double/baseline is
    # 3.967 there, outside [3.98, 4.00]; those rows are held to the 3% rule below (1.7%).
    base100 = _n(df, "table1", "baseline", "cifar100")
    assert _n(df, "table1", "double", "cifar100") / base100 == pytest.approx(5_502_052 / 1_387_108)


def test_table1_within_3_percent(df):
    t1 = df[df.table == "table1"]
    assert len(t1) == 10 and t1.paper_params.notna().all()
    assert (t1.rel_diff.abs() <= 0.03).all(), t1
    assert _n(df, "table1", "baseline", "cifar10") == 1_369_738  # PAPER_SPEC §2.4, with biases


def test_table5_within_0_6_percent(df):
    t5 = df[df.table == "table5"]
    assert set(t5.row) == {"baseline", "crelu_all", "crelu_conv1_4_7", "crelu_conv1_4"}
    assert t5.paper_params.notna().all()
    assert (t5.rel_diff.abs() <= 0.006).all(), t5


def test_table4_and_table2_match_spec_arithmetic(df):
    # DERIVED counts of PAPER_SPEC §2.4 (with biases / BN affine)
    expected = {
        ("table4", "baseline"): 9_372_840,
        ("table4", "avr_conv1_4"): 9_372_840,
        ("table4", "avr_conv1_7"): 9_372_840,
        ("table4", "avr_conv1_9"): 9_372_840,
        ("table4", "crelu_conv1_4_7"): 8_605_480,
        ("table4", "crelu_conv1_4"): 10_144_936,
        ("table4", "crelu_conv1_7"): 11_766_952,
        ("table4", "crelu_conv1_9"): 16_633_000,
        ("table4", "crelu_all"): 4_686_420,
    }
    for (table, row), n in expected.items():
        assert _n(df, table, row, "imagenet") == n, row
    assert _n(df, "table2", "vgg", "cifar10") == 14_991_946
    assert _n(df, "table2", "vgg", "cifar100") == 15_038_116
    assert _n(df, "table2", "crelu_conv1", "cifar10") == 14_990_986
    assert _n(df, "table2", "crelu_conv1_3", "cifar10") == 14_953_930
    assert _n(df, "table2", "crelu_conv1_3_5", "cifar10") == 14_806_090
    assert df[df.table.isin(["table2", "table4"])].paper_params.isna().all()


def test_meta_device_count_equals_cpu_build():
    from crelu.models import build_model
    from crelu.tables.rows import model_config

    cpu = build_model(model_config("table1", "crelu_half"), 100).num_parameters()
    assert count_params("table1", "crelu_half", "cifar100") == cpu == 703_204


def test_write_params(ref, df, tmp_path):
    paths = write_params(ref, tmp_path)
    assert [p.name for p in paths] == ["params.csv", "params.md"]
    out = pd.read_csv(tmp_path / "params.csv")
    assert list(out.columns) == ["table", "row", "dataset", "params", "paper_params", "rel_diff"]
    assert len(out) == len(df) == 10 + 8 + 9 + 4
    row = out[(out.table == "table2") & (out.row == "vgg") & (out.dataset == "cifar10")].iloc[0]
    assert pd.isna(row.paper_params) and pd.isna(row.rel_diff)
    md = (tmp_path / "params.md").read_text()
    assert "| table5 | CReLU (all) (`crelu_all`) | ImageNet | 4,686,420 | 4.7M | -0.29% |" in md
