"""Build the paper's Tables 1, 2, 4 and 5 from run records: cells (ours vs paper) and the runs behind them.

Where each number comes from (run.json schema in :mod:`crelu.results.record`):

* Single train / test (Tables 1, 2): the top-level Single record; test = ``final.test_error``, train =
  ``protocol.train_error_full`` (eval-mode error on the whole training set); † when ``protocol.reached`` is
  False (the held-out loss never reached L*, PAPER_SPEC §4.1).
* Average ± SE (Tables 1, 2): :func:`crelu.protocols.average` of ``final.test_error`` over the 10-fold
  records.
* Vote (Tables 1, 2): :func:`crelu.protocols.vote_error` over those records' ``test_logits.pt``; probability
  averaging is the number shown (INFERRED, PAPER_SPEC §4.3), the majority vote is kept in the CSV as
  ``vote_majority``.
* Tables 4, 5: ``final.top1_center`` / ``top5_center`` / ``top1_10patch`` / ``top5_10patch`` of the ImageNet
  ``protocol == "full"`` record.
* params: ``record["params"]`` of a used run of that row.
"""

from __future__ import annotations

import math

import numpy as np

from crelu.protocols.ensemble import average, load_fold_logits, vote_error
from crelu.results.record import RecordError, RunRecord
from crelu.tables.cells import IMAGENET_METRICS, METRIC_HEADERS, NAN, TABLE_SPECS, Cell, Table, TableSpec
from crelu.tables.collect import RunIndex, Selection, select_kfold, select_latest
from crelu.tables.reference import PaperReference
from crelu.tables.rows import REFERENCE_ONLY, ROWS, TABLE_DATASETS, RowDef

__all__ = ["METRIC_HEADERS", "TABLE_SPECS", "Cell", "Table", "TableSpec", "build_table"]


def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return NAN
    return v


class _Builder:
    def __init__(self, table: Table, index: RunIndex, ref: PaperReference) -> None:
        self.t, self.index, self.ref = table, index, ref

    def add(self, rd: RowDef, ds: str, metric: str, **kw) -> Cell:
        paper, paper_se = self.ref.get(rd.table, ds, rd.paper_model, metric)
        if metric == "params":
            p = self.ref.params(rd.table, rd.row, ds)
            paper, paper_se = (float(p) if p is not None else NAN), NAN
        c = Cell(self.t.name, rd.row, rd.label, ds, metric, paper=paper, paper_se=paper_se, **kw)
        self.t.cells.append(c)
        return c

    def trace(self, rd: RowDef, ds: str, metric: str, value: float, rec: RunRecord, artifact: str) -> None:
        m = rec.meta
        self.t.runs.append(
            {
                "table": self.t.name,
                "row": rd.row,
                "dataset": ds,
                "metric": metric,
                "value": value,
                "run_dir": str(rec.run_dir),
                "artifact": artifact,
                "protocol": m.get("protocol"),
                "fold": m.get("fold"),
                "seed": m.get("seed"),
                "config_hash": m.get("config_hash"),
                "finished_at": rec.data.get("finished_at"),
            }
        )

    def notes(self, sel: Selection, where: str) -> None:
        self.t.notes.extend(sel.notes(where))

    # -- cell groups ----------------------------------------------------------------------------------------
    def single(self, rd: RowDef, ds: str, metrics: tuple[str, ...]) -> list[RunRecord]:
        sel = select_latest(self.index.find(rd.sources, rd.row, ds, "single"))
        self.notes(sel, f"{rd.row}/{ds}/Single")
        if not sel.used:
            sub = self.index.find(rd.sources, rd.row, ds, "single", phases=True)
            if sub:
                states = ", ".join(sorted(f"{r.meta.get('phase')}: {r.status}" for r in sub))
                self.t.notes.append(f"{rd.row}/{ds}/Single: no finished top-level record yet ({states}).")
        rec = sel.used[0] if sel.used else None
        proto = (rec.data.get("protocol") or {}) if rec else {}
        flag = "†" if rec is not None and proto.get("reached") is False else ""
        sources = {
            "single_test": lambda r: r.final.get("test_error"),
            "single_train": lambda r: (r.data.get("protocol") or {}).get("train_error_full"),
        }
        for metric in metrics:
            if rec is None:
                self.add(rd, ds, metric)
                continue
            v = _num(sources[metric](rec))
            if math.isnan(v):
                self.missing(rd, ds, metric, rec)
                continue
            self.add(rd, ds, metric, ours=v, n_runs=1, flag=flag)
            self.trace(rd, ds, metric, v, rec, str(rec.path))
        return sel.used

    def missing(self, rd: RowDef, ds: str, metric: str, rec: RunRecord) -> None:
        """A finished run without the value: shown as missing, with the reason in the cell and a footnote."""
        note = f"{metric} missing from {rec.path}"
        self.add(rd, ds, metric, note=note)
        self.t.notes.append(f"{rd.row}/{ds}: {note}.")

    def kfold(self, rd: RowDef, ds: str) -> list[RunRecord]:
        sel = select_kfold(self.index.find(rd.sources, rd.row, ds, "kfold"))
        where = f"{rd.row}/{ds}/10-fold"
        self.notes(sel, where)
        errs = [(r, _num(r.final.get("test_error"))) for r in sel.used]
        good = [(r, e) for r, e in errs if not math.isnan(e)]
        if len(good) < len(errs):
            self.t.notes.append(f"{where}: {len(errs) - len(good)} finished run(s) without final.test_error.")
        if good:
            a = average(e for _, e in good)
            marker = f"{len(good)}/{sel.expected} folds" if len(good) < (sel.expected or 0) else ""
            self.add(
                rd,
                ds,
                "average",
                ours=a["mean"],
                ours_se=a["se"],
                ours_se_ddof0=a["se_ddof0"],
                n_runs=a["n"],
                n_expected=sel.expected,
                marker=marker,
            )
            for r, e in good:
                self.trace(rd, ds, "average", e, r, str(r.path))
        else:
            self.add(rd, ds, "average", n_expected=sel.expected)
        self.vote(rd, ds, sel, where)
        return sel.used

    def vote(self, rd: RowDef, ds: str, sel: Selection, where: str) -> None:
        have = [r for r in sel.used if r.logits_path().is_file()]
        if len(have) < sel.n:
            self.t.notes.append(
                f"{where}: {sel.n - len(have)} finished run(s) have no test logits; Vote uses "
                f"{len(have)} network(s)."
            )
        result, note = None, ""
        if have:
            try:
                logits, labels = load_fold_logits(have)
                result = vote_error(logits, labels)
            except (RecordError, ValueError) as e:
                note = f"Vote not computed: {e}"
                self.t.notes.append(f"{where}: {note}")
        marker = f"{len(have)}/{sel.expected} folds" if have and len(have) < (sel.expected or 0) else ""
        for metric, key in (("vote", "prob_avg"), ("vote_majority", "majority")):
            if result is None:
                self.add(rd, ds, metric, n_expected=sel.expected, note=note)
                continue
            self.add(
                rd, ds, metric, ours=result[key], n_runs=result["n"], n_expected=sel.expected, marker=marker
            )
            for r, lg in zip(have, logits):
                own = float(100.0 * np.mean(lg.argmax(axis=1) != labels))
                self.trace(rd, ds, metric, own, r, str(r.logits_path()))

    def full(self, rd: RowDef, ds: str) -> list[RunRecord]:
        sel = select_latest(self.index.find(rd.sources, rd.row, ds, "full"))
        self.notes(sel, f"{rd.row}/{ds}")
        rec = sel.used[0] if sel.used else None
        for metric in IMAGENET_METRICS:
            v = _num(rec.final.get(metric)) if rec is not None else NAN
            if rec is None:
                self.add(rd, ds, metric)
            elif math.isnan(v):
                self.missing(rd, ds, metric, rec)
            else:
                self.add(rd, ds, metric, ours=v, n_runs=1)
                self.trace(rd, ds, metric, v, rec, str(rec.path))
        return sel.used

    def params(self, rd: RowDef, ds: str, used: list[RunRecord]) -> None:
        counted = [r for r in used if isinstance(r.data.get("params"), int)]
        if not counted:
            self.add(rd, ds, "params")
            return
        rec = counted[-1]
        distinct = {r.data["params"] for r in counted}
        if len(distinct) > 1:
            self.t.notes.append(
                f"{rd.row}/{ds}: runs report different parameter counts {sorted(distinct)}; "
                f"showing {rec.data['params']} ({rec.run_dir})."
            )
        self.add(rd, ds, "params", ours=float(rec.data["params"]), n_runs=1)
        self.trace(rd, ds, "params", float(rec.data["params"]), rec, str(rec.path))

    def reference_only(self, name: str, label: str, ds: str, metrics: tuple[str, ...]) -> None:
        for metric in metrics:
            paper, se = self.ref.get(self.t.name, ds, name, metric)
            if metric == "params":
                p = self.ref.params(self.t.name, name, ds)
                paper = float(p) if p is not None else NAN
            self.t.cells.append(
                Cell(self.t.name, name, label, ds, metric, paper=paper, paper_se=se, reference_only=True)
            )


def build_table(name: str, index: RunIndex, ref: PaperReference) -> Table:
    """Build ``name`` ("table1", "table2", "table4" or "table5") from the records in ``index``."""
    if name not in TABLE_SPECS:
        raise KeyError(f"unknown table {name!r}; known: {sorted(TABLE_SPECS)}")
    spec = TABLE_SPECS[name]
    table = Table(name, spec)
    b = _Builder(table, index, ref)
    metrics = spec.shown + spec.extra
    for ds in TABLE_DATASETS[name]:
        for name_, label in REFERENCE_ONLY.get(name, ()):
            b.reference_only(name_, label, ds, spec.shown)
        for rd in ROWS[name].values():
            used: list[RunRecord] = []
            if name in ("table1", "table2"):
                used += b.single(rd, ds, tuple(m for m in metrics if m.startswith("single")))
                used += b.kfold(rd, ds)
            else:
                used += b.full(rd, ds)
            if "params" in metrics:
                b.params(rd, ds, used)
    table.notes = index.notes() + _standard_notes(name) + table.notes
    table.cells.sort(
        key=lambda c: (TABLE_DATASETS[name].index(c.dataset), _row_order(name, c), metrics.index(c.metric))
    )
    return table


def _row_order(table: str, c: Cell) -> int:
    ext = [n for n, _ in REFERENCE_ONLY.get(table, ())]
    if c.reference_only:
        return ext.index(c.row)
    return len(ext) + list(ROWS[table]).index(c.row)


def _standard_notes(name: str) -> list[str]:
    notes = [
        "Δ = ours − paper in percentage points (params: relative difference). "
        "“—”: no finished run; “(k/n folds)”: a 10-fold number from k of n folds only."
    ]
    if name in ("table1", "table2"):
        notes.append(
            "Vote = error of the averaged softmax probabilities of the fold networks (INFERRED reading of "
            "the paper); the majority vote is in the CSV as vote_majority. SE uses ddof = 1 (INFERRED)."
        )
        notes.append(
            "† = Single phase 2 never reached the phase-1 target loss L*; the number is at the end of "
            "the schedule."
        )
    if name == "table5":
        notes.append("AlexNet, FriedNet and PrunedNet are other papers' models: paper values only.")
    return notes
