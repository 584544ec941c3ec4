"""Experiment loggers: ``none`` and ``wandb`` (offline by default).

The wandb run is named and grouped from the run's identity, so the dashboard groups runs without manual
naming: project = ``logger.project``; group = ``<table>/<row>/<dataset>``; job_type = the protocol
(``kfold``/``single-phase2``/...); name = the run key's last parts; tags = table, row, dataset, protocol, fold.
The wandb id is derived from the run key, so a resumed run continues the same wandb run.  Any wandb failure
(import, init, log) becomes a warning: training never stops because of logging.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from typing import Any

log = logging.getLogger(__name__)


class NullLogger:
    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class WandbLogger(NullLogger):
    def __init__(self, cfg, meta: dict[str, Any], run_key: str, config: dict[str, Any]) -> None:
        self.run = None
        try:
            import wandb

            mode = os.environ.get("WANDB_MODE", cfg.mode)
            table, row, dataset = meta.get("table") or "adhoc", meta.get("row") or meta.get("name"), meta["dataset"]
            job = meta["protocol"] + (f"-{meta['phase']}" if meta.get("phase") else "")
            tags = [t for t in (table, row, dataset, meta["protocol"], meta.get("profile")) if t]
            if meta.get("fold") is not None:
                tags.append(f"fold{meta['fold']}")
            os.makedirs(cfg.dir, exist_ok=True)
            self.run = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                group=f"{table}/{row}/{dataset}",
                job_type=job,
                name=run_key.split("/", 3)[-1] if table != "adhoc" else run_key,
                id=hashlib.sha1(run_key.encode()).hexdigest()[:16],
                resume="allow",
                tags=[*tags, *cfg.tags],
                config=config,
                dir=cfg.dir,
                mode=mode,
                reinit=True,
            )
        except Exception as e:  # logging must never take training down
            self._warn("init", e)

    def _warn(self, what: str, e: Exception) -> None:
        msg = f"wandb {what} failed ({type(e).__name__}: {e}); training continues without wandb"
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        log.warning(msg)
        self.run = None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            try:
                self.run.log(metrics, step=step)
            except Exception as e:
                self._warn("log", e)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            try:
                self.run.summary.update(values)
            except Exception as e:
                self._warn("summary", e)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            try:
                self.run.finish(exit_code=exit_code)
            except Exception as e:
                self._warn("finish", e)
            self.run = None


def make_logger(cfg, meta: dict[str, Any], run_key: str, config: dict[str, Any]) -> NullLogger:
    if cfg.name == "none":
        return NullLogger()
    if cfg.name == "wandb":
        return WandbLogger(cfg, meta, run_key, config)
    raise ValueError(f"unknown logger {cfg.name!r}; use none or wandb")
