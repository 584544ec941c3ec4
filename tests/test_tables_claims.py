"""Confidence intervals and the paired test behind the claim verdicts, against SciPy computed independently."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from crelu.results.record import RunRecord
from crelu.tables import RunIndex, build_table
from crelu.tables.claims import check_claims, load_claims, write_claims
from crelu.tables.reference import PaperReference
from crelu.tables.stats import paired_t, t_cdf, t_interval, t_ppf

SCIPY_SNIPPET = """
import json, sys
import numpy as np
from scipy import stats
q = json.loads(sys.stdin.read())
a, b = np.array(q["a"]), np.array(q["b"])
r = stats.ttest_rel(a, b)
ci = r.confidence_interval(0.95)
x = np.array(q["x"])
sem = stats.sem(x)
lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sem)
print(json.dumps({"t": float(r.statistic), "p": float(r.pvalue), "lo": float(ci.low), "hi": float(ci.high),
                  "ci_lo": float(lo), "ci_hi": float(hi),
                  "ppf": [float(stats.t.ppf(0.975, df)) for df in q["dfs"]],
                  "cdf": [float(stats.t.cdf(1.7, df)) for df in q["dfs"]]}))
"""


def scipy_reference(query: dict) -> dict:
    """SciPy's numbers: in this interpreter if it has SciPy, else in another Python on PATH that has it."""
    for exe in (sys.executable, shutil.which("python3"), shutil.which("python")):
        if not exe:
            continue
        p = subprocess.run([exe, "-c", SCIPY_SNIPPET], input=json.dumps(query), capture_output=True, text=True,
                           timeout=120)
        if p.returncode == 0:
            return json.loads(p.stdout)
    pytest.skip("no Python with SciPy available for the independent reference values")


# hand-made per-fold errors of two rows over the same 2 seeds x 5 folds (pairs: same seed, same fold)
ROW_A = [9.1, 9.4, 8.9, 9.6, 9.2, 9.0, 9.5, 9.3, 8.8, 9.7]
ROW_B = [10.0, 10.1, 9.8, 10.4, 9.9, 10.2, 10.3, 9.7, 9.9, 10.6]
DFS = [1, 2, 4, 9, 29]


def test_intervals_and_paired_test_match_scipy():
    ref = scipy_reference({"a": ROW_A, "b": ROW_B, "x": ROW_A[:5], "dfs": DFS})
    test = paired_t(ROW_A, ROW_B)
    assert test.t == pytest.approx(ref["t"], rel=1e-9) and test.p == pytest.approx(ref["p"], rel=1e-6, abs=1e-12)
    assert (test.low, test.high) == pytest.approx((ref["lo"], ref["hi"]), rel=1e-9)
    assert test.n == 10 and test.df == 9
    iv = t_interval(ROW_A[:5])
    assert (iv.low, iv.high) == pytest.approx((ref["ci_lo"], ref["ci_hi"]), rel=1e-9)
    assert [t_ppf(0.975, df) for df in DFS] == pytest.approx(ref["ppf"], rel=1e-9)
    assert [t_cdf(1.7, df) for df in DFS] == pytest.approx(ref["cdf"], rel=1e-9)
    assert t_ppf(0.975, 9) == pytest.approx(2.2621571627409915, rel=1e-9)  # the textbook value, for the record
    assert np.isnan(paired_t([1.0], [2.0]).p) and np.isnan(t_interval([3.0]).low)


def _write(root, row, seed, fold, err, folds=5):
    cfg = {"protocol": {"name": "kfold", "folds": folds, "fold": fold}}
    RunRecord(root / row / f"s{seed}f{fold}", {
        "status": "finished", "config": cfg, "final": {"test_error": err}, "finished_at": "2025-01-01",
        "meta": {"table": "table1", "row": row, "profile": "smoke", "dataset": "cifar10", "protocol": "kfold",
                 "fold": fold, "seed": seed, "config_hash": f"h{row}"}}).save()


def test_claim_verdicts_from_the_paired_test_on_records(tmp_path):
    root = tmp_path / "runs"
    for i, (a, b) in enumerate(zip(ROW_A, ROW_B)):
        _write(root, "crelu", i // 5, i % 5, a)
        _write(root, "baseline", i // 5, i % 5, b)
        _write(root, "avr", i // 5, i % 5, a + (0.3 if i % 2 else -0.3))  # no consistent difference to crelu
        _write(root, "double", i // 5, i % 5, a - 1.0 + 0.01 * i)  # double clearly *better*: claim fails
    table = build_table("table1", RunIndex.scan(root, profile="smoke"), PaperReference.load())
    assert table.cell("crelu", "cifar10", "average").n_seeds == 2
    claims = load_claims()
    cifar10_avg = claims[(claims.dataset == "cifar10") & (claims.metric == "average") & (claims.table == "table1")]
    results = {r.id: r for r in check_claims(table, PaperReference.load(), cifar10_avg)}
    ref = scipy_reference({"a": ROW_A, "b": ROW_B, "x": ROW_A, "dfs": [1]})
    beat = results["t1-crelu-beats-baseline"]
    assert beat.test.n == 10 and beat.test.p == pytest.approx(ref["p"], rel=1e-6)
    assert (beat.test.low, beat.test.high) == pytest.approx((ref["lo"], ref["hi"]), rel=1e-9)
    assert beat.verdict == "reproduced" and beat.paper_row == 9.39 and beat.paper_other == 10.20
    assert results["t1-avr-short-of-crelu"].verdict == "inconclusive"
    assert results["t1-double-worse"].verdict == "not reproduced"
    # crelu_half has no runs: no pairs, no verdict either way
    assert results["t1-half-on-par"].verdict == "inconclusive" and results["t1-half-on-par"].test.n == 0

    # Vote pairs seed-level numbers; without logits there are none
    out = tmp_path / "out"
    paths = write_claims(table, PaperReference.load(), out)
    assert [p.name for p in paths] == ["table1_claims.md", "table1_claims.csv"]
    df = pd.read_csv(out / "table1_claims.csv")
    assert len(df) == len(claims[claims.table == "table1"])
    row = df[(df.id == "t1-crelu-beats-baseline") & (df.dataset == "cifar10") & (df.metric == "average")].iloc[0]
    assert row.verdict == "reproduced" and row.n_pairs == 10 and row.p == pytest.approx(ref["p"], rel=1e-6)
    md = (out / "table1_claims.md").read_text()
    assert "paired t-test" in md and "**not reproduced**" in md and "Profile 'smoke'" in md


def test_on_par_claims_use_the_stated_margin():
    from crelu.tables.claims import _verdict

    near = paired_t([9.5, 9.6, 9.7, 9.55], [9.4, 9.5, 9.5, 9.45])  # +0.125 ± small: worse, but within 0.5
    assert _verdict(near, "not_higher", 0.5)[0] == "reproduced"
    assert _verdict(near, "lower", 0.0)[0] == "not reproduced"
    far = paired_t([11.0, 11.2, 11.1], [10.0, 10.1, 10.0])
    assert _verdict(far, "not_higher", 0.5)[0] == "not reproduced"
