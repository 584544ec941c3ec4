"""Finding the trained networks the analyses need, by run-record meta, and keeping track of what was written.

A run qualifies for (table, row, dataset) when its ``run.json`` says ``status: finished``, its meta matches,
and its directory holds a checkpoint.  When several qualify (seeds, folds, protocols, profiles) the choice is
deterministic: profile ``paper`` first (or only the ``--profile`` asked for), then protocol ``full``,
``single`` (phase 2 before phase 1), ``kfold``; then the lowest fold and seed; then the path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from crelu.results.record import RecordError, RunRecord, iter_records
from crelu.training.checkpoint import CKPT_NAME, PREV_NAME, load_model

_PROTOCOL_ORDER = {"full": 0, "single": 1, "kfold": 2}


class Skip(Exception):
    """An analysis (or one of its parts) cannot run; the message is printed as ``skipped: ...``."""


@dataclass
class LoadedRun:
    label: str  # "table1/crelu (cifar10)"
    run_dir: Path
    model: nn.Module
    cfg: object  # the run's resolved config (DictConfig)
    record: RunRecord

    @property
    def norm_stats(self) -> tuple[list[float], list[float]] | None:
        """(mean, std) per channel the run normalised its inputs with, when its record has them."""
        d = self.record.data.get("data") or {}
        return (d["mean"], d["std"]) if d.get("mean") and d.get("std") else None


def _has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / CKPT_NAME).exists() or (run_dir / PREV_NAME).exists()


def _rank(rec: RunRecord) -> tuple:
    m = rec.meta
    phase = m.get("phase") or (rec.data.get("config") or {}).get("protocol", {}).get("phase")
    return (
        0 if m.get("profile") == "paper" else 1,
        _PROTOCOL_ORDER.get(m.get("protocol"), 3),
        0 if phase in (None, "phase2") else 1,
        m.get("fold") if m.get("fold") is not None else -1,
        m.get("seed") if m.get("seed") is not None else 0,
        str(rec.run_dir),
    )


def select_run(
    records: list[RunRecord], table: str, row: str, dataset: str | None = None, profile: str | None = None
) -> RunRecord | None:
    """The run to analyse for ``table/row`` on ``dataset``, or None if no finished run has a checkpoint."""
    ok = [
        r
        for r in records
        if r.meta.get("table") == table
        and r.meta.get("row") == row
        and r.status == "finished"
        and (dataset is None or r.meta.get("dataset") == dataset)
        and (profile is None or r.meta.get("profile") == profile)
        and _has_checkpoint(r.run_dir)
    ]
    return min(ok, key=_rank) if ok else None


@dataclass
class Context:
    """Shared state of one CLI invocation: where to look and write, device, loaded models, the output log."""

    runs: Path
    out: Path
    results: Path
    profile: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    data_root: str | None = None
    seed: int = 0
    progress: bool = True
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    _records: list[RunRecord] | None = None
    _loaded: dict[str, LoadedRun] = field(default_factory=dict)

    @property
    def records(self) -> list[RunRecord]:
        if self._records is None:
            self._records = [r for r in iter_records(self.runs) if not isinstance(r, RecordError)]
        return self._records

    def load(self, table: str, row: str, dataset: str) -> LoadedRun:
        """Load the selected run's model (cached); raise :class:`Skip` when there is none."""
        label = f"{table}/{row} ({dataset})"
        if label in self._loaded:
            return self._loaded[label]
        rec = select_run(self.records, table, row, dataset, self.profile)
        if rec is None:
            where = f"{self.runs}" + (f" with profile {self.profile}" if self.profile else "")
            raise Skip(f"no finished run for {table}/{row} on {dataset} under {where}")
        try:
            model, cfg = load_model(rec.run_dir, map_location=self.device)
        except Exception as e:  # unreadable checkpoint, config the current code cannot build, ...
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise Skip(f"cannot load {rec.run_dir} for {table}/{row}: {type(e).__name__}: {reason}") from e
        run = LoadedRun(label, rec.run_dir, model, cfg, rec)
        self._loaded[label] = run
        print(f"using {label}: {rec.run_dir}", flush=True)
        return run

    def try_load(self, table: str, row: str, dataset: str, analysis: str) -> LoadedRun | None:
        try:
            return self.load(table, row, dataset)
        except Skip as e:
            self.skip(f"{analysis}: {e}")
            return None

    def skip(self, message: str) -> None:
        print(f"skipped: {message}", flush=True)
        self.skipped.append(message)

    def wrote(self, paths: list[Path]) -> None:
        for p in paths:
            print(f"wrote {p}", flush=True)
        self.written.extend(paths)

    def figure(self, name: str) -> Path:
        return self.out / name

    def number_file(self, name: str) -> Path:
        return self.results / name
