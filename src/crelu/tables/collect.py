"""Find the run records behind a table cell and pick the ones that count.

Rules (the same for every table):

* only records with ``status == "finished"`` count; others are reported in a footnote with their status;
* Single cells use the top-level ``protocol == "single"`` record (``meta.phase`` null); the phase-1/phase-2
  sub-runs are ignored;
* when several finished runs exist for the same cell (or the same fold of a 10-fold cell) -- other seeds,
  other config hashes, reruns -- the most recent finished one (``finished_at``, then ``started_at``, then run
  directory) is used and a footnote says how many were set aside;
* records whose ``meta.profile`` differs from the requested profile are skipped (counted in a footnote).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from crelu.results.record import RecordError, RunRecord, iter_records

__all__ = ["DEFAULT_FOLDS", "RunIndex", "Selection", "select_kfold", "select_latest"]

DEFAULT_FOLDS = 10


@dataclass
class RunIndex:
    """All readable run records below ``root`` (read once), with what could not be used."""

    root: Path
    records: list[RunRecord] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    other_profile: int = 0

    @classmethod
    def scan(cls, root: str | os.PathLike, profile: str | None = None) -> RunIndex:
        idx = cls(Path(root))
        for item in iter_records(root):
            if isinstance(item, RecordError):
                idx.unreadable.append(str(item))
            elif profile is not None and item.meta.get("profile") not in (None, profile):
                idx.other_profile += 1
            else:
                idx.records.append(item)
        return idx

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
                f"{len(self.unreadable)} run record(s) under {self.root} could not be read and were "
                f"skipped (first: {self.unreadable[0]})."
            )
        if self.other_profile:
            out.append(f"{self.other_profile} run record(s) of another profile were skipped.")
        return out


def _recency(r: RunRecord) -> tuple[str, str, str]:
    return (str(r.data.get("finished_at") or ""), str(r.data.get("started_at") or ""), str(r.run_dir))


def _variant(r: RunRecord) -> tuple[str, str]:
    return (str(r.meta.get("seed")), str(r.meta.get("config_hash")))


@dataclass
class Selection:
    """The records used for one cell, and what was left out."""

    used: list[RunRecord]
    expected: int | None = None  # number of folds a complete 10-fold cell has
    unfinished: Counter = field(default_factory=Counter)  # status -> count of matching records not finished
    superseded: int = 0  # finished records set aside for a more recent one
    variants: int = 0  # distinct (seed, config_hash) among the finished records
    bad_fold: int = 0  # finished kfold records without a usable fold number

    @property
    def n(self) -> int:
        return len(self.used)

    @property
    def partial(self) -> bool:
        return self.expected is not None and 0 < self.n < self.expected

    def marker(self) -> str:
        """``"7/10 folds"`` for an incomplete 10-fold cell, else ``""``."""
        return f"{self.n}/{self.expected} folds" if self.partial else ""

    def notes(self, where: str) -> list[str]:
        out = []
        if self.superseded:
            per = " per fold" if self.expected is not None else ""
            out.append(
                f"{where}: {self.superseded + self.n} finished runs over {self.variants} (seed, config "
                f"hash) variant(s); the most recent finished run{per} is used, {self.superseded} set aside."
            )
        if self.unfinished:
            states = ", ".join(f"{s}: {c}" for s, c in sorted(self.unfinished.items()))
            out.append(f"{where}: {sum(self.unfinished.values())} unfinished run(s) not counted ({states}).")
        if self.partial:
            out.append(f"{where}: only {self.marker()} finished; the numbers shown use those folds only.")
        if self.bad_fold:
            out.append(f"{where}: {self.bad_fold} finished 10-fold run(s) without a valid meta.fold ignored.")
        return out


def _split_status(records: Sequence[RunRecord]) -> tuple[list[RunRecord], Counter]:
    done = [r for r in records if r.status == "finished"]
    return done, Counter(r.status for r in records if r.status != "finished")


def select_latest(records: Sequence[RunRecord]) -> Selection:
    """The most recent finished record (Single, ImageNet "full" cells)."""
    done, unfinished = _split_status(records)
    used = [max(done, key=_recency)] if done else []
    return Selection(used, None, unfinished, max(len(done) - 1, 0), len({_variant(r) for r in done}))


def _expected_folds(records: Sequence[RunRecord]) -> int:
    counts = []
    for r in records:
        folds = (r.data.get("config") or {}).get("protocol", {}).get("folds")
        if isinstance(folds, int) and folds > 0:
            counts.append(folds)
    return max(counts) if counts else DEFAULT_FOLDS


def select_kfold(records: Sequence[RunRecord]) -> Selection:
    """The most recent finished record of every fold, ordered by fold."""
    done, unfinished = _split_status(records)
    expected = _expected_folds(records)
    by_fold: dict[int, list[RunRecord]] = {}
    bad = 0
    for r in done:
        fold = r.meta.get("fold")
        if isinstance(fold, int) and not isinstance(fold, bool) and 0 <= fold < expected:
            by_fold.setdefault(fold, []).append(r)
        else:
            bad += 1
    used = [max(by_fold[k], key=_recency) for k in sorted(by_fold)]
    superseded = sum(len(v) - 1 for v in by_fold.values())
    return Selection(used, expected, unfinished, superseded, len({_variant(r) for r in done}), bad)
