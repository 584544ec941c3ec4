"""Table builder on synthetic run directories: cell values, partial-fold markers, traceability, outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from crelu.protocols import average
from crelu.results.record import RunRecord
from crelu.tables import RunIndex, build_table, write_table
from crelu.tables.__main__ import main
from crelu.tables.reference import PaperReference
from crelu.tables.render import fmt_ours, to_latex, to_markdown

LABELS = [0, 1, 2, 0]
RIGHT = [0, 1, 2, 1]  # 7 networks: 25% error each
OTHER = [0, 1, 1, 0]  # 3 networks: 25% error each; the prob-avg ensemble is wrong only on image 3


def _onehot_logits(pred) -> torch.Tensor:
    x = torch.zeros(len(pred), 3)
    x[torch.arange(len(pred)), torch.tensor(pred)] = 5.0
    return x


def make_run(
    root: Path,
    table,
    row,
    dataset,
    protocol,
    *,
    fold=None,
    seed=0,
    chash="aaaa0000",
    status="finished",
    test_error=None,
    params=None,
    phase=None,
    final=None,
    proto=None,
    logits=None,
    finished_at="2025-01-01T00:00:00+00:00",
    profile="paper",
    images=50000,
    official=True,
    config=None,
    meta=None,
) -> RunRecord:
    name = f"{protocol}-{fold}" if fold is not None else protocol + (f"-{phase}" if phase else "")
    run_dir = root / table / row / dataset / name / f"seed{seed}-{chash}"
    data = {
        "status": status,
        "meta": {
            "table": table,
            "row": row,
            "name": row,
            "profile": profile,
            "dataset": dataset,
            "protocol": protocol,
            "fold": fold,
            "seed": seed,
            "config_hash": chash,
            "phase": phase,
            **(meta or {}),
        },
        "config": config or {"protocol": {"name": protocol, "folds": 10}},
        "data": {"fingerprint": {"train": {"images": images, "official": official}}},
        "params": params,
        "started_at": "2025-01-01T00:00:00+00:00",
        "finished_at": finished_at if status == "finished" else None,
        "final": dict(final or {}, **({"test_error": test_error} if test_error is not None else {})),
        "protocol": proto or {},
        "artifacts": {"test_logits": "test_logits.pt"},
    }
    rec = RunRecord(run_dir, data)
    rec.save()
    if logits is not None:
        torch.save(
            {"logits": _onehot_logits(logits), "labels": torch.tensor(LABELS)}, run_dir / "test_logits.pt"
        )
    return rec


CRELU_ERRS = [9.0 + 0.1 * k for k in range(10)]


@pytest.fixture()
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    # crelu / cifar10: all 10 folds; fold 0 also has an older run of another seed that must be set aside
    for k in range(10):
        make_run(
            root,
            "table1",
            "crelu",
            "cifar10",
            "kfold",
            fold=k,
            test_error=CRELU_ERRS[k],
            params=2735626,
            logits=RIGHT if k < 7 else OTHER,
            finished_at=f"2025-02-{k + 1:02d}T00:00:00+00:00",
        )
    make_run(
        root,
        "table1",
        "crelu",
        "cifar10",
        "kfold",
        fold=0,
        seed=1,
        test_error=50.0,
        params=2735626,
        logits=OTHER,
        finished_at="2024-12-31T00:00:00+00:00",
    )
    # crelu / cifar10 Single: the top-level record counts, the phase sub-runs do not
    make_run(
        root,
        "table1",
        "crelu",
        "cifar10",
        "single",
        test_error=8.5,
        params=2735626,
        proto={"train_error_full": 4.0, "reached": False},
    )
    make_run(root, "table1", "crelu", "cifar10", "single", phase="phase1", test_error=99.0)
    make_run(root, "table1", "crelu", "cifar10", "single", phase="phase2", test_error=98.0)
    # baseline / cifar10: 7 of 10 folds finished, one still running, one failed
    for k in range(7):
        make_run(root, "table1", "baseline", "cifar10", "kfold", fold=k, test_error=10.0 + k, logits=RIGHT)
    make_run(root, "table1", "baseline", "cifar10", "kfold", fold=7, status="running")
    make_run(root, "table1", "baseline", "cifar10", "kfold", fold=8, status="failed")
    # a smoke-profile run must not leak into the paper tables
    make_run(root, "table1", "avr", "cifar10", "single", test_error=1.0, profile="smoke")
    # Table 2 and ImageNet
    make_run(root, "table2", "crelu_conv1", "cifar100", "single", test_error=27.0, proto={"reached": True})
    make_run(
        root,
        "table4",
        "crelu_conv1_4",
        "imagenet",
        "full",
        params=10144936,
        final={"top1_center": 40.0, "top5_center": 18.0, "top1_10patch": 36.5, "top5_10patch": 15.5},
    )
    make_run(root, "table4", "baseline", "imagenet", "full", final={"top1_center": 42.0, "top5_center": 20.0})
    make_run(root, "table1", "double", "cifar100", "single", phase="phase1", status="running")
    (root / "broken").mkdir()
    (root / "broken" / "run.json").write_text("{not json")
    return root


@pytest.fixture()
def ref() -> PaperReference:
    return PaperReference.load()


def test_table1_cells(runs, ref):
    index = RunIndex.scan(runs, profile="paper")
    assert len(index.unreadable) == 1 and index.other_profile == 1
    t = build_table("table1", index, ref)

    avg = t.cell("crelu", "cifar10", "average")
    expected = average(CRELU_ERRS)
    assert avg.ours == pytest.approx(9.45) and avg.ours == pytest.approx(expected["mean"])
    assert avg.ours_se == pytest.approx(np.std(CRELU_ERRS, ddof=1) / np.sqrt(10))
    assert avg.n_runs == 10 and avg.marker == ""
    assert avg.paper == 9.39 and avg.paper_se == 0.11
    assert avg.diff == pytest.approx(0.06)
    assert fmt_ours(avg) == "9.45 ± 0.10 ✓"  # the paper's 9.39 is inside mean ± t(0.975, 9)·SE
    assert (avg.ci_low, avg.ci_high) == pytest.approx(9.45 + np.array([-1, 1]) * 2.2621571628 * avg.ours_se)

    vote = t.cell("crelu", "cifar10", "vote")
    assert vote.ours == pytest.approx(25.0) and vote.n_runs == 10
    assert t.cell("crelu", "cifar10", "vote_majority").ours == pytest.approx(25.0)

    single = t.cell("crelu", "cifar10", "single_test")
    assert single.ours == 8.5 and single.flag == "†" and fmt_ours(single) == "8.50†"
    assert t.cell("crelu", "cifar10", "single_train").ours == 4.0
    assert t.cell("crelu", "cifar10", "params").ours == 2735626
    assert t.cell("crelu", "cifar10", "params").paper == 2.8e6

    base = t.cell("baseline", "cifar10", "average")
    assert base.ours == pytest.approx(13.0) and base.n_runs == 7 and base.marker == "7/10 folds"
    assert "(7/10 folds)" in fmt_ours(base)
    assert t.cell("baseline", "cifar10", "vote").marker == "7/10 folds"

    for metric in ("single_test", "average", "vote", "params"):
        c = t.cell("avr", "cifar10", metric)
        assert c.n_runs == 0 and fmt_ours(c) == "—"

    notes = "\n".join(t.notes)
    assert "other variant cfg-aaaa0000-s1 (recipe cfg-aaaa0000, seed 1, partial, 1/10 folds, Average 50.00)" in notes
    assert "unfinished run(s) not counted (failed: 1, running: 1)" in notes
    assert "could not be read" in notes and "another profile" in notes


def test_tables_2_4_5(runs, ref):
    index = RunIndex.scan(runs, profile="paper")
    t2 = build_table("table2", index, ref)
    c = t2.cell("crelu_conv1", "cifar100", "single_test")
    assert c.ours == 27.0 and c.flag == "" and c.paper == 27.29
    assert t2.cell("vgg", "cifar10", "average").n_runs == 0

    t4 = build_table("table4", index, ref)
    c = t4.cell("crelu_conv1_4", "imagenet", "top1_10patch")
    assert c.ours == 36.5 and c.paper == 36.20 and c.diff == pytest.approx(0.30)

    base = t4.cell("baseline", "imagenet", "top1_10patch")
    assert np.isnan(base.ours) and base.n_runs == 0 and "top1_10patch missing" in base.note
    assert t4.cell("baseline", "imagenet", "top1_center").ours == 42.0
    assert any("baseline/imagenet: top5_10patch missing" in n for n in t4.notes)

    t1 = build_table("table1", index, ref)
    assert any(
        "double/cifar100/Single: no finished top-level record yet (phase1: running)" in n for n in t1.notes
    )

    t5 = build_table("table5", index, ref)
    p = t5.cell("crelu_conv1_4", "imagenet", "params")
    assert p.ours == 10144936 and p.paper == 10.1e6
    assert p.diff == pytest.approx(10144936 / 10.1e6 - 1)
    alex = t5.cell("alexnet", "imagenet", "top1_center")
    assert alex.reference_only and alex.paper == 42.6 and fmt_ours(alex) == "n/a"


def test_written_outputs_trace_back(runs, ref, tmp_path):
    index = RunIndex.scan(runs, profile="paper")
    out = tmp_path / "out"
    t = build_table("table1", index, ref)
    paths = write_table(t, out)
    assert {p.name for p in paths} == {"table1.md", "table1.csv", "table1.tex", "table1_runs.csv",
                                       "table1_variants.csv"}

    tidy = pd.read_csv(out / "table1_runs.csv")
    assert len(tidy) > 0
    assert all(Path(d).is_dir() and (Path(d) / "run.json").is_file() for d in tidy["run_dir"])
    assert all(Path(a).is_file() for a in tidy["artifact"])
    avg_rows = tidy[(tidy.row == "crelu") & (tidy.dataset == "cifar10") & (tidy.metric == "average")]
    assert len(avg_rows) == 11  # 10 folds of the shown variant + the other seed's fold 0
    assert avg_rows["used"].sum() == 10 and avg_rows[avg_rows["used"]]["value"].mean() == pytest.approx(9.45)
    assert set(avg_rows[~avg_rows["used"]]["value"]) == {50.0}  # the other seed's run is listed, not used
    assert set(avg_rows["variant"]) == {"cfg-aaaa0000-s0", "cfg-aaaa0000-s1"}
    # in every table, every cell traces to exactly n_runs rows of the tidy CSV, each with an existing run_dir
    for name in ("table1", "table2", "table4", "table5"):
        write_table(build_table(name, index, ref), out)
        tidy_n = pd.read_csv(out / f"{name}_runs.csv")
        tidy_n = tidy_n[tidy_n["used"]]
        assert all((Path(d) / "run.json").is_file() for d in tidy_n["run_dir"])
        cells = pd.read_csv(out / f"{name}.csv")
        for c in cells.itertuples():
            sel = (tidy_n.row == c.row) & (tidy_n.dataset == c.dataset) & (tidy_n.metric == c.metric)
            assert sel.sum() == c.n_runs, (name, c.row, c.dataset, c.metric)
            if c.n_runs:
                assert not pd.isna(c.ours)

    md = (out / "table1.md").read_text()
    assert "| CReLU | 4.00† | 4.23 | -0.23 | 8.50† | 8.43 | +0.07 | 9.45 ± 0.10 ✓ | 9.39 ± 0.11 | +0.06 |" in md
    assert "13.00 ± 0.82 ✗ (7/10 folds)" in md  # the paper's 10.20 is outside 13.00 ± t(0.975, 6)·0.82
    assert "| AVR | — | 4.10 |" in md
    tex = (out / "table1.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and "(7/10 folds)" in tex
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 2


def test_render_functions_and_cli(runs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["table4", "--runs", str(runs), "--out", str(out), "--profile", "paper"]) == 0
    assert (out / "table4.md").is_file() and (out / "table4_runs.csv").is_file()
    assert "table4: 6/36 cells with runs" in capsys.readouterr().out
    index = RunIndex.scan(runs, profile="paper")
    t = build_table("table2", index, PaperReference.load())
    assert "### CIFAR-100" in to_markdown(t) and to_latex(t).endswith("\n")
    with pytest.raises(SystemExit):
        main(["table3"])
