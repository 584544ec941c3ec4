"""Hydra callbacks of ``crelu-train`` (registered in ``configs/config.yaml`` under ``hydra.callbacks``).

:class:`SweepReport` makes a multirun say what broke.  Each job writes its outcome (finished / skipped /
failed / diverged, run directory, one-line reason) to ``crelu_job.json`` in its Hydra output folder; that
works for every launcher (basic, joblib, submitit), because ``on_job_end`` runs in the process that ran the
job and the sweep folder is shared.  As each job ends it prints ``sweep: job 3/8 done (...)``; at the end
of the sweep it prints one table (counts, and each failed or diverged job's run directory and reason) and
the sweep exits 1 when a job failed.  ``CRELU_SWEEP_OK_ON_FAILURE=1`` (or
``hydra.callbacks.sweep_report.ok_on_failure=true``) keeps the exit status 0.  Diverged jobs are listed but
do not fail the sweep: their records say ``failed`` and the tables show the gap.

:class:`OutputCheck` turns an output folder Hydra cannot create into one error line before any job starts.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("crelu")

OUTCOME_NAME = "crelu_job.json"
SWEEP_NAME = "crelu_sweep.json"
STATUSES = ("finished", "skipped", "failed", "diverged")

_pending: dict[str, Any] | None = None  # the outcome of the job running in this process (set by the task)
_exit_code = 0  # set by SweepReport.on_multirun_end; crelu.train.main exits with it


def report_outcome(status: str, *, run_dir: str | os.PathLike | None = None, reason: str | None = None,
                   test_error: float | None = None) -> None:
    """Called by the task function: what this job did (picked up by :meth:`SweepReport.on_job_end`)."""
    global _pending
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    _pending = {"status": status, "run_dir": str(run_dir) if run_dir else None, "reason": reason,
                "test_error": test_error}


def exit_code() -> int:
    """Exit status the finished multirun asks for (0 when every job finished, skipped or diverged)."""
    return _exit_code


def error_line(message: str) -> None:
    print(f"crelu-train: error: {message}", file=sys.stderr, flush=True)


def _sweep_dir(config: DictConfig) -> Path:
    return Path(os.path.abspath(str(config.hydra.sweep.dir)))


def _plan(config: DictConfig) -> tuple[int | None, list[str]]:
    """Number of jobs the basic sweeper will launch (None for other sweepers or unparsable overrides), and the
    overrides every job shares (left out of the progress lines)."""
    task = [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task, resolve=False)]
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(task)
        fixed = [f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in parsed if not o.is_sweep_override()]
        if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
            return None, fixed
        params = config.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params, resolve=True) if params else {}
        args = [f"{k}={v}" for k, v in params.items()] + task
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
        return sum(len(b) for b in batches), fixed
    except Exception:  # a glob() or a plugin's syntax: progress is shown without a total
        return None, []


def _outcome_files(sweep_dir: Path) -> list[Path]:
    return [Path(p) for p in glob.glob(str(sweep_dir / "**" / OUTCOME_NAME), recursive=True)]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summarise(outcomes: list[dict[str, Any]], total: int | None) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Counts per status and the rows of failed/diverged jobs (jobs that never reported count as failed)."""
    counts = dict.fromkeys(STATUSES, 0)
    rows = []
    for o in sorted(outcomes, key=lambda o: (o.get("num") is None, o.get("num") or 0)):
        status = o.get("status") if o.get("status") in STATUSES else "failed"
        counts[status] += 1
        if status in ("failed", "diverged"):
            rows.append({**o, "status": status})
    missing = (total - len(outcomes)) if total is not None else 0
    if missing > 0:
        counts["failed"] += missing
        rows.append({"num": None, "status": "failed", "run_dir": None,
                     "reason": f"{missing} job(s) never reported an outcome (killed, or crashed outside the job)"})
    return counts, rows


def format_table(counts: dict[str, int], rows: list[dict[str, Any]], sweep_dir: Path) -> str:
    n = sum(counts.values())
    head = " | ".join(f"{k} {counts[k]}" for k in STATUSES)
    lines = [f"sweep summary: {n} jobs | {head}   ({sweep_dir})"]
    if rows:
        lines.append(f"  {'job':>4}  {'status':<9} run directory -- reason")
        for r in rows:
            num = "?" if r.get("num") is None else str(r["num"])
            where = r.get("run_dir") or r.get("output_dir") or "-"
            reason = (r.get("reason") or "").splitlines()[0] if r.get("reason") else "no reason recorded"
            lines.append(f"  {num:>4}  {r['status']:<9} {where} -- {reason}")
    return "\n".join(lines)


class SweepReport(Callback):
    """Per-job outcome files, ``jobs done / total`` progress and one failure table at the end of a multirun."""

    def __init__(self, ok_on_failure: bool = False) -> None:
        self.ok_on_failure = ok_on_failure

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _exit_code
        _exit_code = 0
        sweep_dir = _sweep_dir(config)
        for old in _outcome_files(sweep_dir):  # a relaunch into the same sweep folder starts a new count
            with contextlib.suppress(OSError):
                old.unlink()
        from crelu.results.io import atomic_write_json

        total, fixed = _plan(config)
        with contextlib.suppress(OSError):
            atomic_write_json(sweep_dir / SWEEP_NAME, {"total": total, "fixed_overrides": fixed})

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        global _pending
        outcome, _pending = _pending, None
        if outcome is None:  # the task did not report: Hydra caught an exception, or another task function
            if job_return.status == JobStatus.FAILED:
                e = job_return._return_value
                outcome = {"status": "failed", "run_dir": None, "reason": f"{type(e).__name__}: {e}"}
            else:
                outcome = {"status": "finished", "run_dir": None, "reason": None}
        hc = config.hydra
        mode = str(OmegaConf.select(hc, "mode") or "")
        if "MULTIRUN" not in mode:
            return
        out_dir = Path(str(hc.runtime.output_dir))
        outcome.update(num=OmegaConf.select(hc, "job.num"), output_dir=str(out_dir),
                       overrides=list(OmegaConf.select(hc, "overrides.task") or []))
        from crelu.results.io import atomic_write_json

        try:
            atomic_write_json(out_dir / OUTCOME_NAME, outcome)
        except OSError as e:
            log.warning("could not write the job outcome %s: %s", out_dir / OUTCOME_NAME, e)
        sweep_dir = _sweep_dir(config)
        done = len(_outcome_files(sweep_dir))
        plan = _read(sweep_dir / SWEEP_NAME) or {}
        total, fixed = plan.get("total"), set(plan.get("fixed_overrides") or [])
        what = " ".join(o for o in outcome["overrides"] if o not in fixed)
        print(f"sweep: job {done}/{total if total is not None else '?'} done: #{outcome['num']} "
              f"{outcome['status']} ({what})", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _exit_code
        sweep_dir = _sweep_dir(config)
        outcomes = [o for o in map(_read, _outcome_files(sweep_dir)) if o is not None]
        total = (_read(sweep_dir / SWEEP_NAME) or {}).get("total")
        counts, rows = summarise(outcomes, total)
        print(format_table(counts, rows, sweep_dir), flush=True)
        ok = self.ok_on_failure or os.environ.get("CRELU_SWEEP_OK_ON_FAILURE", "") not in ("", "0")
        if counts["failed"] and not ok:
            error_line(f"{counts['failed']} of {sum(counts.values())} sweep jobs failed (listed above); "
                       "CRELU_SWEEP_OK_ON_FAILURE=1 keeps the exit status 0")
            _exit_code = 1


class OutputCheck(Callback):
    """Create Hydra's output folder up front: a folder that cannot be created is one error line, exit 2."""

    @staticmethod
    def _make(folder: str, key: str) -> None:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            error_line(f"cannot create the output folder {folder} ({key}): {e.strerror or e}; choose a writable "
                       f"folder with {key}=DIR or CRELU_HYDRA_DIR=DIR")
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._make(str(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._make(str(config.hydra.sweep.dir), "hydra.sweep.dir")
