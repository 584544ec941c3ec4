"""Build the paper's Tables 1, 2, 4 and 5 from run records: cells (ours vs paper) and the runs behind them.

Which runs make a cell: :mod:`crelu.tables.collect` (one recipe per cell; its complete seeds).  Where each
number comes from (run.json schema in :mod:`crelu.results.record`):

* Single train / test (Tables 1, 2): the top-level Single record of each shown seed; test =
  ``final.test_error``, train = ``protocol.train_error_full`` (eval-mode error on the whole training set); †
  when ``protocol.reached`` is False (the held-out loss never reached L*, docs/recipes.md).
* Average (Tables 1, 2): per seed, :func:`crelu.protocols.average` of ``final.test_error`` over that seed's
  fold records.  One seed: the mean ± the fold SE (ddof 1), as the paper prints it; its 95% interval is
  mean ± t(0.975, k-1)·SE over the k folds.  Several seeds: the mean of the seed-level Averages ± the 95%
  t-interval over seeds.
* Vote (Tables 1, 2): per seed, :func:`crelu.protocols.vote_error` over that seed's folds' ``test_logits.pt``;
  probability averaging is the number shown (INFERRED, docs/recipes.md), the majority vote is kept in the CSV
  as ``vote_majority``.  Several seeds: mean ± 95% t-interval over seeds (one seed has no interval).
* Tables 4, 5: ``final.top1_center`` / ``top5_center`` / ``top1_10patch`` / ``top5_10patch`` of the ImageNet
  ``protocol == "full"`` record of each seed (mean ± 95% t-interval over seeds when several).
* params: ``record["params"]`` of a used run of that row.

``paper``-profile cells whose runs did not train on the official full training set (``data.fingerprint`` of the
record: another copy of the files, a ``dataset.train_subset``, or no fingerprint at all) carry a visible mark
with the number of training images.
"""

from __future__ import annotations

import math

import numpy as np

from crelu.protocols.ensemble import average, load_fold_logits, vote_error
from crelu.results.record import RecordError, RunRecord
from crelu.tables.cells import IMAGENET_METRICS, METRIC_HEADERS, NAN, TABLE_SPECS, Cell, Table, TableSpec
from crelu.tables.collect import RowSelection, RunIndex, Variant, select_row
from crelu.tables.reference import PaperReference
from crelu.tables.rows import REFERENCE_ONLY, ROWS, TABLE_DATASETS, RowDef
from crelu.tables.stats import Interval, interval_from_se, t_interval

__all__ = ["METRIC_HEADERS", "TABLE_SPECS", "Cell", "Table", "TableSpec", "build_table", "data_mark"]


def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return NAN
    return v


def _train_fp(rec: RunRecord) -> dict:
    fp = (rec.data.get("data") or {}).get("fingerprint") or {}
    return fp.get("train") or {}


def _wandb_id(rec: RunRecord):
    w = rec.data.get("wandb")
    return w.get("id") if isinstance(w, dict) else None


def data_mark(records: list[RunRecord]) -> str:
    """Why these runs did not train on the official full training set (with the image count), or ``""``."""
    marks = []
    for rec in records:
        cfg_ds = (rec.data.get("config") or {}).get("dataset") or {}
        fp = _train_fp(rec)
        # a dataset.train_subset is drawn from the fingerprinted files: the subset is what the run trained on
        images = cfg_ds.get("train_subset") or fp.get("images")
        if images is None:
            images = (rec.data.get("data") or {}).get("train_size")
        n = f"{int(images):,} train images" if isinstance(images, (int, float)) else "train images unknown"
        if cfg_ds.get("train_subset"):
            marks.append(f"subset: {n}")
        elif not fp:
            marks.append(f"no data fingerprint: {n}")
        elif fp.get("official") is False:
            marks.append(f"not the official files: {n}")
        elif fp.get("official") is not True:
            marks.append(f"unverified files: {n}")
        if cfg_ds.get("test_subset"):
            marks.append(f"test subset: {int(cfg_ds['test_subset']):,} images")
    return "; ".join(dict.fromkeys(marks))


class _Builder:
    def __init__(self, table: Table, index: RunIndex, ref: PaperReference) -> None:
        self.t, self.index, self.ref = table, index, ref
        self.paper_profile = table.profile == "paper"

    def add(self, rd: RowDef, ds: str, metric: str, **kw) -> Cell:
        paper, paper_se = self.ref.get(rd.table, ds, rd.paper_model, metric)
        if metric == "params":
            p = self.ref.params(rd.table, rd.row, ds)
            paper, paper_se = (float(p) if p is not None else NAN), NAN
        c = Cell(self.t.name, rd.row, rd.label, ds, metric, paper=paper, paper_se=paper_se, **kw)
        self.t.cells.append(c)
        return c

    def value_cell(self, rd: RowDef, ds: str, metric: str, per_seed: dict, variants: list[Variant],
                   runs: list[RunRecord], **kw) -> Cell:
        """A cell from seed-level values: one seed -> the value; several -> mean and 95% t-interval."""
        iv = t_interval(list(per_seed.values()))
        mark = data_mark(runs) if self.paper_profile else ""
        c = self.add(rd, ds, metric, ours=iv.mean, ci_low=iv.low, ci_high=iv.high, n_seeds=len(per_seed),
                     ours_se=iv.se if len(per_seed) > 1 else NAN,
                     variant=";".join(v.variant for v in variants), data_mark=mark, **kw)
        self.t.samples[(rd.row, ds, metric)] = {(s,): x for s, x in per_seed.items()}
        return c

    def trace(self, rd: RowDef, ds: str, metric: str, value: float, rec: RunRecord, artifact: str,
              v: Variant, used: bool) -> None:
        m, fp = rec.meta, _train_fp(rec)
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
                "variant": v.variant,
                "recipe": v.recipe,
                "used": used,
                "train_images": fp.get("images"),
                "train_official": fp.get("official"),
                "wandb_id": _wandb_id(rec),
                "finished_at": rec.data.get("finished_at"),
            }
        )

    def variants(self, rd: RowDef, ds: str, sel: RowSelection, where: str) -> None:
        """List every variant (``*_variants.csv``) and give each variant not shown its own note line."""
        shown = ", ".join(str(v.seed) for v in sel.used)
        for v in (*sel.used, *sel.others):
            used = v in sel.used
            errs = [_num(r.final.get("test_error")) for r in v.fold_runs]
            errs = [e for e in errs if not math.isnan(e)]
            avg = float(np.mean(errs)) if errs else NAN
            self.t.variants.append(
                {"table": self.t.name, "row": rd.row, "dataset": ds, "variant": v.variant, "recipe": v.recipe,
                 "seed": v.seed, "folds": v.n_folds, "expected": v.expected, "single": v.single is not None,
                 "full": v.full is not None, "used": used, "average": avg, "runs": len(v.runs)}
            )
            if not used:
                what = f"{v.n_folds}/{v.expected} folds" if v.expected is not None else ""
                if v.expected is not None and not v.complete:
                    what = "partial, " + what
                extra = f", Average {avg:.2f}" if errs else ""
                single = _num(v.single.final.get("test_error")) if v.single is not None else NAN
                extra += f", Single test {single:.2f}" if not math.isnan(single) else ""
                self.t.notes.append(
                    f"{where}: other variant {v.variant} (recipe {v.recipe}, seed {v.seed}"
                    f"{', ' + what if what else ''}{extra}) is not in the cell, which shows recipe "
                    f"{sel.recipe} (seed(s) {shown}); its runs are in the _runs.csv with used = False."
                )
                for r in v.runs:
                    metric = {"kfold": "average", "single": "single_test"}.get(r.meta.get("protocol"), "run")
                    self.trace(rd, ds, metric, _num(r.final.get("test_error")), r, str(r.path), v, False)
        self.t.notes.extend(sel.notes(where))

    # -- cell groups ----------------------------------------------------------------------------------------
    def single(self, rd: RowDef, ds: str, sel: RowSelection, metrics: tuple[str, ...]) -> list[RunRecord]:
        where = f"{rd.row}/{ds}/Single"
        have = [v for v in sel.used if v.single is not None]
        if not have and sel.used:
            rest = [v for v in sel.others if v.recipe == sel.recipe and v.single is not None]
            if rest:
                have = [max(rest, key=lambda v: v.single.data.get("finished_at") or "")]
                self.t.notes.append(f"{where}: from seed {have[0].seed} of the shown recipe (the shown seeds have "
                                    "no finished Single run).")
        if not have:
            sub = self.index.find(rd.sources, rd.row, ds, "single", phases=True)
            if sub:
                states = ", ".join(sorted(f"{r.meta.get('phase')}: {r.status}" for r in sub))
                self.t.notes.append(f"{where}: no finished top-level record yet ({states}).")
            for metric in metrics:
                self.add(rd, ds, metric)
            return []
        recs = [v.single for v in have]
        flag = "†" if any((r.data.get("protocol") or {}).get("reached") is False for r in recs) else ""
        sources = {
            "single_test": lambda r: r.final.get("test_error"),
            "single_train": lambda r: (r.data.get("protocol") or {}).get("train_error_full"),
        }
        for metric in metrics:
            vals = {v.seed: _num(sources[metric](v.single)) for v in have}
            missing = [v.single for v in have if math.isnan(vals[v.seed])]
            if missing:
                self.missing(rd, ds, metric, missing[0])
                continue
            self.value_cell(rd, ds, metric, vals, have, recs, flag=flag, n_runs=len(recs))
            for v in have:
                self.trace(rd, ds, metric, vals[v.seed], v.single, str(v.single.path), v, True)
        return recs

    def missing(self, rd: RowDef, ds: str, metric: str, rec: RunRecord) -> None:
        """A finished run without the value: shown as missing, with the reason in the cell and a footnote."""
        note = f"{metric} missing from {rec.path}"
        self.add(rd, ds, metric, note=note)
        self.t.notes.append(f"{rd.row}/{ds}: {note}.")

    def kfold(self, rd: RowDef, ds: str, sel: RowSelection) -> list[RunRecord]:
        where = f"{rd.row}/{ds}/10-fold"
        used = [v for v in sel.used if v.n_folds]
        runs = [r for v in used for r in v.fold_runs]
        per_seed: dict = {}
        one_seed: tuple[Interval, dict] | None = None
        samples: dict[tuple, float] = {}
        for v in used:
            good = [(r, _num(r.final.get("test_error"))) for r in v.fold_runs]
            good = [(r, e) for r, e in good if not math.isnan(e)]
            if len(good) < v.n_folds:
                self.t.notes.append(f"{where}: {v.n_folds - len(good)} finished run(s) of seed {v.seed} without "
                                    "final.test_error.")
            if not good:
                continue
            a = average(e for _, e in good)
            per_seed[v.seed] = a["mean"]
            one_seed = (interval_from_se(a["mean"], a["se"], a["n"]), a)
            for r, e in good:
                samples[(v.seed, r.meta.get("fold"))] = e
                self.trace(rd, ds, "average", e, r, str(r.path), v, True)
        marker = f"{used[0].n_folds}/{sel.expected} folds" if sel.partial and used else ""
        mark = data_mark(runs) if self.paper_profile else ""
        variant = ";".join(v.variant for v in used)
        if len(per_seed) == 1:
            iv, a = one_seed
            self.add(rd, ds, "average", ours=a["mean"], ours_se=a["se"], ours_se_ddof0=a["se_ddof0"],
                     ci_low=iv.low, ci_high=iv.high, n_seeds=1, n_runs=a["n"], n_expected=sel.expected,
                     marker=marker, variant=variant, data_mark=mark)
        elif per_seed:
            iv = t_interval(list(per_seed.values()))
            self.add(rd, ds, "average", ours=iv.mean, ours_se=iv.se, ci_low=iv.low, ci_high=iv.high,
                     n_seeds=len(per_seed), n_runs=len(samples), n_expected=sel.expected, marker=marker,
                     variant=variant, data_mark=mark)
        else:
            self.add(rd, ds, "average", n_expected=sel.expected)
        if samples:
            self.t.samples[(rd.row, ds, "average")] = samples
        self.vote(rd, ds, used, sel, where, marker)
        return runs

    def vote(self, rd: RowDef, ds: str, used: list[Variant], sel: RowSelection, where: str, marker: str) -> None:
        per_seed: dict[str, dict] = {"vote": {}, "vote_majority": {}}
        n_nets, note, voted = 0, "", []
        for v in used:
            have = [r for r in v.fold_runs if r.logits_path().is_file()]
            if len(have) < v.n_folds:
                self.t.notes.append(f"{where}: {v.n_folds - len(have)} finished run(s) of seed {v.seed} have no "
                                    f"test logits; its Vote uses {len(have)} network(s).")
            if not have:
                continue
            try:
                logits, labels = load_fold_logits(have)
                result = vote_error(logits, labels)
            except (RecordError, ValueError) as e:
                note = f"Vote not computed: {e}"
                self.t.notes.append(f"{where}: {note}")
                continue
            per_seed["vote"][v.seed] = result["prob_avg"]
            per_seed["vote_majority"][v.seed] = result["majority"]
            n_nets += result["n"]
            voted.append(v)
            for r, lg in zip(have, logits):
                own = float(100.0 * np.mean(lg.argmax(axis=1) != labels))
                for metric in per_seed:
                    self.trace(rd, ds, metric, own, r, str(r.logits_path()), v, True)
        runs = [r for v in voted for r in v.fold_runs]
        for metric, vals in per_seed.items():
            if not vals:
                self.add(rd, ds, metric, n_expected=sel.expected, note=note)
                continue
            self.value_cell(rd, ds, metric, vals, voted, runs, n_runs=n_nets, n_expected=sel.expected,
                            marker=marker)

    def full(self, rd: RowDef, ds: str, sel: RowSelection) -> list[RunRecord]:
        have = [v for v in sel.used if v.full is not None]
        recs = [v.full for v in have]
        for metric in IMAGENET_METRICS:
            if not have:
                self.add(rd, ds, metric)
                continue
            vals = {v.seed: _num(v.full.final.get(metric)) for v in have}
            missing = [v.full for v in have if math.isnan(vals[v.seed])]
            if missing:
                self.missing(rd, ds, metric, missing[0])
                continue
            self.value_cell(rd, ds, metric, vals, have, recs, n_runs=len(recs))
            for v in have:
                self.trace(rd, ds, metric, vals[v.seed], v.full, str(v.full.path), v, True)
        return recs

    def params(self, rd: RowDef, ds: str, used: list[RunRecord], variants: list[Variant]) -> None:
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
        v = next((v for v in variants if rec in v.runs), variants[0])
        self.add(rd, ds, "params", ours=float(rec.data["params"]), n_runs=1)
        self.trace(rd, ds, "params", float(rec.data["params"]), rec, str(rec.path), v, True)

    def reference_only(self, name: str, label: str, ds: str, metrics: tuple[str, ...]) -> None:
        for metric in metrics:
            paper, se = self.ref.get(self.t.name, ds, name, metric)
            if metric == "params":
                p = self.ref.params(self.t.name, name, ds)
                paper = float(p) if p is not None else NAN
            self.t.cells.append(
                Cell(self.t.name, name, label, ds, metric, paper=paper, paper_se=se, reference_only=True)
            )


def build_table(name: str, index: RunIndex, ref: PaperReference, profile: str | None = None) -> Table:
    """Build ``name`` ("table1", "table2", "table4" or "table5") from the records in ``index``.

    ``profile`` (default: the index's, else "paper") decides whether cells are checked for the official data.
    """
    if name not in TABLE_SPECS:
        raise KeyError(f"unknown table {name!r}; known: {sorted(TABLE_SPECS)}")
    spec = TABLE_SPECS[name]
    table = Table(name, spec, profile=profile or index.profile or "paper")
    b = _Builder(table, index, ref)
    metrics = spec.shown + spec.extra
    for ds in TABLE_DATASETS[name]:
        for name_, label in REFERENCE_ONLY.get(name, ()):
            b.reference_only(name_, label, ds, spec.shown)
        for rd in ROWS[name].values():
            used: list[RunRecord] = []
            if name in ("table1", "table2"):
                sel = select_row(kfold=index.find(rd.sources, rd.row, ds, "kfold"),
                                 single=index.find(rd.sources, rd.row, ds, "single"))
                used += b.single(rd, ds, sel, tuple(m for m in metrics if m.startswith("single")))
                used += b.kfold(rd, ds, sel)
            else:
                sel = select_row(full=index.find(rd.sources, rd.row, ds, "full"))
                used += b.full(rd, ds, sel)
            b.variants(rd, ds, sel, f"{rd.row}/{ds}")
            if "params" in metrics:
                b.params(rd, ds, used, sel.used)
    table.notes = index.notes() + _standard_notes(name, table.profile) + table.notes
    table.cells.sort(
        key=lambda c: (TABLE_DATASETS[name].index(c.dataset), _row_order(name, c), metrics.index(c.metric))
    )
    return table


def _row_order(table: str, c: Cell) -> int:
    ext = [n for n, _ in REFERENCE_ONLY.get(table, ())]
    if c.reference_only:
        return ext.index(c.row)
    return len(ext) + list(ROWS[table]).index(c.row)


def _standard_notes(name: str, profile: str) -> list[str]:
    notes = [
        "Δ = ours − paper in percentage points (params: relative difference). "
        "“—”: no finished run; “(k/n folds)”: a 10-fold number from k of n folds only.",
        "One cell = one recipe: Average and Vote come from one variant's folds per seed, Single from the same "
        "recipe and seeds; other variants are listed below and in the _variants.csv.",
        "“(S seeds)”: mean over S seeds ± the half-width of the 95% t-interval over seeds; without it, one seed "
        "(Average: ± the fold SE, ddof 1). ✓ / ✗: the paper's value is inside / outside our 95% interval (one "
        "seed: mean ± t(0.975, k−1)·SE over the k folds; Vote and Single of one seed have no interval).",
    ]
    if profile == "paper":
        notes.append("[...] in a cell: its runs did not train on the official full training set (a subset, "
                     "other files, or no data fingerprint in the record), with the number of training images.")
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
