"""Find the run records behind a table cell and pick the ones that count: one cell, one recipe.

Identity of a run (:mod:`crelu.results.runkey`):

* its **variant** = recipe + seed (+ the training data's fingerprint): ``meta.variant`` of the record, or, for
  records written before variants were stored, ``variant_id(record["config"])`` computed here;
* its **recipe** = the variant without the seed (``meta.recipe`` or ``recipe_id(record["config"])``).

Rules (the same for every table):

* only records with ``status == "finished"`` count; others are reported in a footnote with their status;
* Single cells use the top-level ``protocol == "single"`` record (``meta.phase`` null); the phase-1/phase-2
  sub-runs are ignored;
* the records of one (row, dataset) are grouped by variant; within a variant the most recent finished run of
  each fold (``finished_at``, then ``started_at``, then run directory) is used;
* **one recipe per cell**: the recipe with the most complete seeds (all folds finished), then the most folds,
  then the most Single runs, then the newest finished run, is the one shown.  Its complete seeds are averaged
  (:mod:`crelu.tables.build`: mean and 95% t-interval over seeds); when it has no complete seed, its variant
  with the most folds is shown with a ``k/n folds`` marker.  Average and Vote are computed over one variant's
  folds, never over a mixture; Single comes from the same recipe and seeds;
* every other variant (another recipe, e.g. after ``optim.lr=...``, or an incomplete seed of the shown recipe)
  is listed as a separate line in the notes with its own fold count and Average, and every run of every variant
  appears in ``<table>_runs.csv`` with its ``variant`` and ``used`` flag;
* records whose ``meta.profile`` differs from the requested profile are skipped (counted in a footnote);
  unreadable or foreign-schema records are skipped and named, path by path.
"""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from crelu.results.record import RecordError, RunRecord, SchemaVersionError, iter_records

__all__ = [
    "DEFAULT_FOLDS",
    "RowSelection",
    "RunIndex",
    "Variant",
    "recipe_of",
    "select_row",
    "variant_of",
]

DEFAULT_FOLDS = 10


@dataclass
class RunIndex:
    """All readable run records below ``root`` (read once), with what could not be used."""

    root: Path
    records: list[RunRecord] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # one reason per record, naming its path
    foreign: list[str] = field(default_factory=list)  # records of another record-schema version
    other_profile: int = 0
    profile: str | None = None

    @classmethod
    def scan(cls, root: str | os.PathLike, profile: str | None = None) -> RunIndex:
        idx = cls(Path(root), profile=profile)
        for item in iter_records(root):
            if isinstance(item, SchemaVersionError):
                idx.foreign.append(str(item).splitlines()[0])
            elif isinstance(item, RecordError):
                idx.unreadable.append(str(item).splitlines()[0])
            elif profile is not None and item.meta.get("profile") not in (None, profile):
                idx.other_profile += 1
            else:
                idx.records.append(item)
        return idx

    @property
    def skipped(self) -> list[str]:
        """Every record that could not be used, one line each (unreadable first, then foreign schema)."""
        return [*self.unreadable, *self.foreign]

    def find(
        self, tables: Iterable[str], row: str, dataset: str, protocol: str, phases: bool = False
    ) -> list[RunRecord]:
        """Records of any status for one (row, dataset, protocol).

        Single: the top-level records (``meta.phase`` null), or with ``phases=True`` only the phase sub-runs.
        """
        tables = set(tables)
        out = []
        for r in self.records:
            m = r.meta
            if m.get("table") not in tables or m.get("row") != row or m.get("dataset") != dataset:
                continue
            if m.get("protocol") != protocol:
                continue
            if protocol == "single" and (m.get("phase") is not None) != phases:
                continue
            out.append(r)
        return out

    def notes(self) -> list[str]:
        out = []
        if self.unreadable:
            out.append(
                f"{len(self.unreadable)} run record(s) under {self.root} could not be read and were skipped: "
                + "; ".join(self.unreadable)
            )
        if self.foreign:
            out.append(
                f"{len(self.foreign)} run record(s) under {self.root} were written with another record schema "
                "and were skipped: " + "; ".join(self.foreign)
            )
        if self.other_profile:
            out.append(f"{self.other_profile} run record(s) of another profile were skipped.")
        return out


def _recency(r: RunRecord) -> tuple[str, str, str]:
    return (str(r.data.get("finished_at") or ""), str(r.data.get("started_at") or ""), str(r.run_dir))


def _ids(r: RunRecord) -> tuple[str, str]:
    """(recipe, variant) of a record: stored in ``meta`` by newer runs, computed from the config otherwise."""
    m = r.meta
    if m.get("variant") and m.get("recipe"):
        return str(m["recipe"]), str(m["variant"])
    cfg = r.data.get("config")
    try:
        # the folds of one variant differ only in protocol.fold/job, which no recipe includes: computed once
        key = json.dumps([{**cfg, "protocol": {k: v for k, v in cfg["protocol"].items() if k not in ("fold", "job")}},
                          m.get("data_digest")], sort_keys=True, default=str)
        return _computed_ids(key)
    except (KeyError, TypeError, AttributeError, ValueError, ImportError):
        h = str(m.get("config_hash"))
        return f"cfg-{h}", f"cfg-{h}-s{m.get('seed')}"


@functools.lru_cache(maxsize=4096)
def _computed_ids(key: str) -> tuple[str, str]:
    from crelu.results.runkey import recipe_id, variant_id

    cfg, digest = json.loads(key)
    return recipe_id(cfg, digest), variant_id(cfg, digest)


def recipe_of(r: RunRecord) -> str:
    return _ids(r)[0]


def variant_of(r: RunRecord) -> str:
    return _ids(r)[1]


def _expected_folds(records: Sequence[RunRecord]) -> int:
    counts = []
    for r in records:
        folds = (r.data.get("config") or {}).get("protocol", {}).get("folds")
        if isinstance(folds, int) and folds > 0:
            counts.append(folds)
    return max(counts) if counts else DEFAULT_FOLDS


def _fold(r: RunRecord, expected: int) -> int | None:
    fold = r.meta.get("fold")
    if isinstance(fold, int) and not isinstance(fold, bool) and 0 <= fold < expected:
        return fold
    return None


@dataclass
class Variant:
    """The finished runs of one variant of a (row, dataset): its folds, its Single run, its full-protocol run."""

    recipe: str
    variant: str
    seed: object
    expected: int | None = None  # folds a complete 10-fold variant has (None: no k-fold runs)
    folds: dict[int, RunRecord] = field(default_factory=dict)  # fold -> newest finished run
    single: RunRecord | None = None
    full: RunRecord | None = None
    superseded: int = 0  # finished runs set aside for a newer run of the same fold / job
    bad_fold: int = 0  # finished k-fold runs without a usable fold number

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    @property
    def complete(self) -> bool:
        return self.expected is not None and self.n_folds >= self.expected

    @property
    def fold_runs(self) -> list[RunRecord]:
        return [self.folds[k] for k in sorted(self.folds)]

    @property
    def runs(self) -> list[RunRecord]:
        return [*self.fold_runs, *(r for r in (self.single, self.full) if r is not None)]

    @property
    def newest(self) -> tuple[str, str, str]:
        return max((_recency(r) for r in self.runs), default=("", "", ""))

    def describe(self) -> str:
        parts = [f"variant {self.variant} (recipe {self.recipe}, seed {self.seed})"]
        if self.expected is not None:
            parts.append(f"{self.n_folds}/{self.expected} folds")
        if self.single is not None:
            parts.append("Single")
        if self.full is not None:
            parts.append("1 run")
        return ", ".join(parts)


@dataclass
class RowSelection:
    """The variants of one (row, dataset) and which of them a cell shows."""

    used: list[Variant]  # the shown recipe's seeds (complete ones; or its best partial variant), by seed
    others: list[Variant]  # every other variant, listed separately
    unfinished: Counter = field(default_factory=Counter)
    expected: int | None = None

    @property
    def recipe(self) -> str | None:
        return self.used[0].recipe if self.used else None

    @property
    def partial(self) -> bool:
        return bool(self.used) and self.expected is not None and not self.used[0].complete

    @property
    def superseded(self) -> int:
        return sum(v.superseded for v in self.used)

    def notes(self, where: str) -> list[str]:
        out = []
        if self.superseded:
            out.append(f"{where}: {self.superseded} older finished run(s) of the same fold and variant were set "
                       "aside for the most recent one.")
        if self.unfinished:
            states = ", ".join(f"{s}: {c}" for s, c in sorted(self.unfinished.items()))
            out.append(f"{where}: {sum(self.unfinished.values())} unfinished run(s) not counted ({states}).")
        bad = sum(v.bad_fold for v in (*self.used, *self.others))
        if bad:
            out.append(f"{where}: {bad} finished 10-fold run(s) without a valid meta.fold ignored.")
        return out


def _group(records: Sequence[RunRecord], kind: str, expected: int | None, into: dict[str, Variant]) -> None:
    for r in records:
        recipe, variant = _ids(r)
        v = into.get(variant)
        if v is None:
            v = into[variant] = Variant(recipe, variant, r.meta.get("seed"))
        if kind == "kfold":
            v.expected = expected
            k = _fold(r, expected or DEFAULT_FOLDS)
            if k is None:
                v.bad_fold += 1
            elif k in v.folds:
                v.superseded += 1
                if _recency(r) > _recency(v.folds[k]):
                    v.folds[k] = r
            else:
                v.folds[k] = r
        else:
            old = getattr(v, kind)
            if old is not None:
                v.superseded += 1
            if old is None or _recency(r) > _recency(old):
                setattr(v, kind, r)


def _seed_key(v: Variant) -> tuple:
    s = v.seed
    return (0, s, v.variant) if isinstance(s, int) and not isinstance(s, bool) else (1, str(s), v.variant)


def select_row(
    kfold: Sequence[RunRecord] = (), single: Sequence[RunRecord] = (), full: Sequence[RunRecord] = ()
) -> RowSelection:
    """Group the records of one (row, dataset) by variant and pick the recipe (and seeds) a cell shows."""
    unfinished = Counter(r.status for r in (*kfold, *single, *full) if r.status != "finished")
    done = {k: [r for r in recs if r.status == "finished"] for k, recs in
            (("kfold", kfold), ("single", single), ("full", full))}
    expected = _expected_folds(kfold) if kfold else None
    variants: dict[str, Variant] = {}
    for kind, recs in done.items():
        _group(recs, kind, expected, variants)
    if not variants:
        return RowSelection([], [], unfinished, expected)
    by_recipe: dict[str, list[Variant]] = {}
    for v in variants.values():
        by_recipe.setdefault(v.recipe, []).append(v)

    def score(vs: list[Variant]):
        return (
            sum(v.complete for v in vs),
            sum(v.n_folds for v in vs),
            sum(v.full is not None for v in vs),
            sum(v.single is not None for v in vs),
            max(v.newest for v in vs),
        )

    recipe = max(by_recipe, key=lambda k: score(by_recipe[k]))
    vs = by_recipe[recipe]
    if expected is None:  # Single / full only: every seed of the recipe counts
        used = [v for v in vs if v.single is not None or v.full is not None]
    else:
        used = [v for v in vs if v.complete]
        if not used:
            with_folds = [v for v in vs if v.n_folds]
            pick = max(with_folds or vs, key=lambda v: (v.n_folds, v.single is not None, v.newest))
            used = [pick]
    used.sort(key=_seed_key)
    ids = {v.variant for v in used}
    others = sorted((v for v in variants.values() if v.variant not in ids), key=lambda v: (v.recipe, _seed_key(v)))
    return RowSelection(used, others, unfinished, expected)
