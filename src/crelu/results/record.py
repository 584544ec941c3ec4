"""The run record: ``run.json`` in every run directory, the single source every table cell traces back to.

Schema (version :data:`RECORD_SCHEMA_VERSION`; errors are in **percent**, losses are mean cross-entropy)::

    {
      "schema_version": 1,
      "status": "running" | "finished" | "failed",
      "run_key": "table1/crelu/cifar10/kfold-3/seed0-1a2b3c4d",
      "meta": {table, row, name, profile, dataset, protocol, fold, seed, config_hash},
      "config": {... the resolved Hydra config ...},
      "git": {"commit": str | null, "dirty": bool | null},
      "params": int,
      "env": {"device": "cpu" | "cuda:0", "device_name": str, "torch": str, "hostname": str},
      "started_at": ISO-8601, "finished_at": ISO-8601 | null, "wall_time_s": float,
      "data": {"train_size": int, "val_size": int, "test_size": int},
      "epochs": [{"epoch": 1, "lr": .., "train_loss": .., "train_error": .., "val_loss": .., "val_error": ..,
                  "test_loss": .., "test_error": .., "time_s": .., "images_per_s": ..}, ...],
      "final": {"epoch": int, "train_loss", "train_error", "val_loss", "val_error", "test_loss", "test_error",
                "stop_reason": "schedule_end" | "target_loss_reached" | ...},
      "protocol": {...protocol-specific results, e.g. Single's L* and its "reached" flag...},
      "artifacts": {"test_logits": "test_logits.pt", "checkpoint": "checkpoint.pt" | null},
      "failure": null | {"type": str, "message": str, "epoch": int}
    }

``train_loss``/``train_error`` in ``epochs`` are running averages in training mode (dropout, augmentation) over
the epoch; ``val_*`` are eval-mode on the held-out part (absent without one).  ``test_logits.pt`` holds
``{"logits": float32 [N, C], "labels": int64 [N]}`` for the test set at the end of training: the Vote protocol is
computed from these files, never by re-running models.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crelu.results.io import atomic_write_json, read_json

RECORD_SCHEMA_VERSION = 1
RECORD_NAME = "run.json"
LOGITS_NAME = "test_logits.pt"


class RecordError(RuntimeError):
    """A run record that cannot be used (missing, unreadable, or written by an incompatible schema)."""


class SchemaVersionError(RecordError):
    """A run record written by another record-schema version: never overwritten silently."""


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunRecord:
    """In-memory view of ``run.json``; :meth:`save` writes it atomically."""

    run_dir: Path
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.run_dir / RECORD_NAME

    @property
    def status(self) -> str:
        return self.data.get("status", "missing")

    @property
    def meta(self) -> dict[str, Any]:
        return self.data.get("meta", {})

    @property
    def final(self) -> dict[str, Any]:
        return self.data.get("final", {})

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return self.data.setdefault("epochs", [])

    def save(self) -> None:
        self.data["schema_version"] = RECORD_SCHEMA_VERSION
        atomic_write_json(self.path, self.data)

    def logits_path(self) -> Path:
        return self.run_dir / self.data.get("artifacts", {}).get("test_logits", LOGITS_NAME)


def load_record(run_dir: str | os.PathLike) -> RunRecord:
    """Read ``run_dir/run.json``; raise :class:`RecordError` with the reason if it cannot be used."""
    run_dir = Path(run_dir)
    path = run_dir / RECORD_NAME
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise RecordError(f"no run record at {path}") from None
    except (OSError, ValueError) as e:
        raise RecordError(f"unreadable run record {path}: {e}") from None
    version = data.get("schema_version")
    if version != RECORD_SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path} was written with record schema {version!r}; this version of crelu-repro reads schema "
            f"{RECORD_SCHEMA_VERSION}. Re-run it (output.overwrite=true) or aggregate it with the version that "
            "wrote it."
        )
    return RunRecord(run_dir, data)


def iter_records(root: str | os.PathLike):
    """Yield every readable :class:`RunRecord` below ``root`` (unreadable ones are yielded as RecordError)."""
    root = Path(root)
    if not root.exists():
        return
    for path in sorted(root.rglob(RECORD_NAME)):
        try:
            yield load_record(path.parent)
        except RecordError as e:
            yield e
