"""The paper's qualitative claims, checked against our runs: a verdict per claim from a paired test.

The claims are data, listed once in ``results/paper_claims.csv`` (columns ``id, table, dataset, metric, row,
relation, other, margin, claim, source``):

* ``relation = lower``: ``row`` has a lower error than ``other`` (e.g. CReLU beats the baseline);
* ``relation = not_higher``: ``row``'s error is at most ``other``'s + ``margin`` percentage points ("on par
  with or better than"; the margin is our choice, stated in the file, the paper gives none).

The test (stated in every output): a **paired t-test** on the differences ``row − other``, two-sided, 95%.

* Average: pairs are the per-fold test errors of the same fold of the same seed in both rows (the folds are the
  same splits in every row: ``protocol.split_seed`` is shared), over every seed both rows have.
* Vote, Single and the ImageNet metrics: pairs are the seed-level numbers of the same seed (needs ≥ 2 seeds:
  with one seed there is nothing to test and the verdict is *inconclusive*).

Verdicts from the 95% interval [lo, hi] of the mean difference: ``lower``: reproduced if hi < 0, not reproduced
if lo > 0, else inconclusive (equivalently: p < 0.05 and the sign decides).  ``not_higher`` with margin m:
reproduced if hi < m, not reproduced if lo > m, else inconclusive.  Fewer than two pairs: inconclusive.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from crelu.results.io import atomic_write_text
from crelu.tables.cells import METRIC_HEADERS, Cell, Table
from crelu.tables.reference import PaperReference, default_data_path
from crelu.tables.render import DATASET_TITLES
from crelu.tables.rows import ROWS
from crelu.tables.stats import PairedTest, paired_t

__all__ = ["CLAIMS_NAME", "TEST_DESCRIPTION", "ClaimResult", "check_claims", "load_claims", "write_claims"]

CLAIMS_NAME = "paper_claims.csv"
_COLUMNS = ["id", "table", "dataset", "metric", "row", "relation", "other", "margin", "claim", "source"]
RELATIONS = ("lower", "not_higher")
TEST_DESCRIPTION = (
    "paired t-test (two-sided, 95%) on row − other: Average pairs the per-fold test errors of the same fold and "
    "seed (the same splits in both rows); Vote, Single and ImageNet metrics pair the seed-level numbers of the "
    "same seed (≥ 2 seeds needed)"
)


def load_claims(path: str | os.PathLike | None = None) -> pd.DataFrame:
    path = Path(path) if path is not None else default_data_path(CLAIMS_NAME)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {_COLUMNS}")
    bad = sorted(set(df["relation"]) - set(RELATIONS))
    if bad:
        raise ValueError(f"{path}: unknown relation(s) {bad}; use one of {list(RELATIONS)}")
    df["margin"] = pd.to_numeric(df["margin"].replace("", "0")).astype(float)
    return df[_COLUMNS]


@dataclass
class ClaimResult:
    id: str
    table: str
    dataset: str
    metric: str
    claim: str
    row: str
    other: str
    relation: str
    margin: float
    source: str
    paper_row: float
    paper_other: float
    ours_row: Cell | None
    ours_other: Cell | None
    test: PairedTest
    verdict: str
    reason: str

    def as_dict(self) -> dict:
        def o(c: Cell | None, attr: str) -> float:
            return getattr(c, attr) if c is not None else math.nan

        return {
            "id": self.id, "table": self.table, "dataset": self.dataset, "metric": self.metric,
            "claim": self.claim, "row": self.row, "other": self.other, "relation": self.relation,
            "margin": self.margin, "paper_row": self.paper_row, "paper_other": self.paper_other,
            "paper_diff": self.paper_row - self.paper_other,
            "ours_row": o(self.ours_row, "ours"), "ours_row_ci_low": o(self.ours_row, "ci_low"),
            "ours_row_ci_high": o(self.ours_row, "ci_high"), "ours_other": o(self.ours_other, "ours"),
            "ours_other_ci_low": o(self.ours_other, "ci_low"), "ours_other_ci_high": o(self.ours_other, "ci_high"),
            "n_pairs": self.test.n, "mean_diff": self.test.mean_diff, "diff_ci_low": self.test.low,
            "diff_ci_high": self.test.high, "t": self.test.t, "df": self.test.df, "p": self.test.p,
            "verdict": self.verdict, "reason": self.reason, "source": self.source,
        }


def _verdict(test: PairedTest, relation: str, margin: float) -> tuple[str, str]:
    if test.n < 2 or math.isnan(test.low):
        return "inconclusive", f"{test.n} pair(s): a paired test needs at least 2"
    bound = margin if relation == "not_higher" else 0.0
    what = f"mean diff {test.mean_diff:+.2f} [{test.low:+.2f}, {test.high:+.2f}], p = {test.p:.3g}, n = {test.n}"
    if test.high < bound:
        return "reproduced", f"{what}: the whole interval is below {bound:+.2f}"
    if test.low > bound:
        return "not reproduced", f"{what}: the whole interval is above {bound:+.2f}"
    return "inconclusive", f"{what}: the interval contains {bound:+.2f}"


def _cell(table: Table, row: str, dataset: str, metric: str) -> Cell | None:
    try:
        return table.cell(row, dataset, metric)
    except KeyError:
        return None


def check_claims(table: Table, ref: PaperReference, claims: pd.DataFrame | None = None) -> list[ClaimResult]:
    """Every claim of ``table`` with our numbers and a verdict (claims of unknown rows are skipped)."""
    claims = load_claims() if claims is None else claims
    out = []
    rows = ROWS.get(table.name, {})
    for c in claims[claims["table"] == table.name].itertuples(index=False):
        if c.row not in rows or c.other not in rows:
            continue
        a = table.samples.get((c.row, c.dataset, c.metric), {})
        b = table.samples.get((c.other, c.dataset, c.metric), {})
        keys = sorted(set(a) & set(b), key=str)
        test = paired_t([a[k] for k in keys], [b[k] for k in keys])
        verdict, reason = _verdict(test, c.relation, float(c.margin))
        pr = ref.get(table.name, c.dataset, rows[c.row].paper_model, c.metric)[0]
        po = ref.get(table.name, c.dataset, rows[c.other].paper_model, c.metric)[0]
        out.append(ClaimResult(c.id, table.name, c.dataset, c.metric, c.claim, c.row, c.other, c.relation,
                               float(c.margin), c.source, pr, po, _cell(table, c.row, c.dataset, c.metric),
                               _cell(table, c.other, c.dataset, c.metric), test, verdict, reason))
    return out


def claims_frame(results: list[ClaimResult]) -> pd.DataFrame:
    return pd.DataFrame([r.as_dict() for r in results])


def _fmt_ours(c: Cell | None) -> str:
    if c is None or math.isnan(c.ours):
        return "—"
    if math.isnan(c.ci_low):
        return f"{c.ours:.2f}"
    return f"{c.ours:.2f} [{c.ci_low:.2f}, {c.ci_high:.2f}]"


def claims_markdown(table: Table, results: list[ClaimResult]) -> str:
    lines = [f"## {table.name}: the paper's claims, checked", "",
             "| claim | dataset | metric | paper (row vs other) | ours (row vs other, 95% CI) | "
             "row − other (95% CI) | verdict |", "|---|---|---|---|---|---|---|"]
    for r in results:
        rel = "<" if r.relation == "lower" else f"≤ other + {r.margin:g}"
        paper = f"{r.paper_row:.2f} vs {r.paper_other:.2f}"
        diff = "—" if math.isnan(r.test.mean_diff) else (
            f"{r.test.mean_diff:+.2f}" + ("" if math.isnan(r.test.low) else
                                           f" [{r.test.low:+.2f}, {r.test.high:+.2f}], p = {r.test.p:.3g}"))
        lines.append(
            f"| {r.claim} (`{r.row}` {rel} `{r.other}`) | {DATASET_TITLES.get(r.dataset, r.dataset)} | "
            f"{METRIC_HEADERS.get(r.metric, r.metric)} | {paper} | {_fmt_ours(r.ours_row)} vs "
            f"{_fmt_ours(r.ours_other)} | {diff} | **{r.verdict}** |"
        )
    lines += ["", f"Test: {TEST_DESCRIPTION}.", "Verdict: reproduced if the 95% interval of the mean difference lies "
              "wholly on the claimed side (below 0, or below the margin for “on par”), not reproduced if wholly "
              "on the other side, inconclusive otherwise.", "Claims are listed in results/paper_claims.csv.", ""]
    if table.profile != "paper":
        lines.insert(2, f"Profile {table.profile!r}: these runs are far too small to say anything about the "
                        "paper; the verdicts only show the machinery.\n")
    return "\n".join(lines)


def write_claims(table: Table, ref: PaperReference, out: str | os.PathLike,
                 claims: pd.DataFrame | None = None) -> list[Path]:
    """Write ``<out>/<table>_claims.{md,csv}`` when the table has claims; return the paths."""
    results = check_claims(table, ref, claims)
    if not results:
        return []
    out = Path(out)
    md, csv = out / f"{table.name}_claims.md", out / f"{table.name}_claims.csv"
    atomic_write_text(csv, claims_frame(results).to_csv(index=False))
    atomic_write_text(md, claims_markdown(table, results))
    return [md, csv]
