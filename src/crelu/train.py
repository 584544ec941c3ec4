"""The one training entrypoint: ``python -m crelu.train [overrides]`` (console script ``crelu-train``).

Examples::

    python -m crelu.train experiment=table1/crelu dataset=cifar100 protocol=kfold protocol.fold=3
    python -m crelu.train -m experiment=table1/baseline,table1/crelu protocol=kfold protocol.fold='range(10)'
    python -m crelu.train experiment=table1/crelu profile=smoke logger=wandb

A thin ``@hydra.main`` over :func:`crelu.protocols.runner.run` (which calls ``crelu.training.train``).
Known faults (missing or unreadable data, an impossible model, bad config values, a full disk, an unwritable
folder) print one line ``crelu-train: error: ...`` naming the file or the config key, and exit 2;
``HYDRA_FULL_ERROR=1`` prints the traceback as well.  An unknown config option (``experiment=table1/nope``)
is refused before Hydra starts, with the available options.  In a sweep (``-m``) a failing job reports its
failure and the sweep goes on; :mod:`crelu.sweep` prints one table at the end and exits 1 if a job failed.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from crelu.config.compose import config_dir
from crelu.config.schema import register_configs

log = logging.getLogger("crelu")
register_configs()

# config groups under configs/ that an override may select (``experiment=table1/crelu``)
GROUPS = ("dataset", "model", "optim", "schedule", "protocol", "logger", "experiment", "table", "profile")


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")


def _group_options(group: str, root: Path) -> list[str]:
    base = root / group
    return sorted(str(p.relative_to(base).with_suffix("")) for p in base.rglob("*.yaml"))


def unknown_option_error(argv: list[str], root: Path | None = None) -> str | None:
    """The error line for a config-group override naming an option that has no YAML file, or None.

    Hydra's own message for ``experiment=table1/nope`` lists search paths, not options; this one lists the
    options of the group (of ``table1`` when that folder exists).  Overrides it cannot judge (extra search
    paths, plugin syntax) are left to Hydra.
    """
    try:
        from hydra._internal.utils import get_args_parser
        from hydra.core.override_parser.overrides_parser import OverridesParser

        args, _ = get_args_parser().parse_known_args(argv)
        if args.config_dir or any("searchpath" in o for o in args.overrides):
            return None
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except BaseException:  # noqa: BLE001 -- argparse exits on bad flags; Hydra then reports them itself
        return None
    root = root or config_dir()
    for o in overrides:
        group = o.key_or_group
        if group not in GROUPS or o.package is not None or o.is_delete():
            continue
        try:
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        except Exception:  # glob(), interpolations: Hydra decides
            continue
        for value in values:
            if value in ("null", "None", "") or (root / group / f"{value}.yaml").is_file():
                continue
            options = _group_options(group, root)
            head, _, _ = value.rpartition("/")
            if head and (root / group / head).is_dir():
                options = [x for x in options if x.startswith(head + "/")]
            listed = ", ".join(options) if options else "none"
            return (f"unknown {group} {value!r} (no configs/{group}/{value}.yaml); available {group} options: "
                    f"{listed}")
    return None


def _one_line(e: BaseException) -> str:
    """The message of a known fault, with the file or key it is about."""
    from crelu.results.io import DiskFullError

    if isinstance(e, OSError) and not isinstance(e, DiskFullError) and e.filename and e.strerror:
        msg = f"cannot write {e.filename}: {e.strerror}"
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
            msg += " (choose a writable output folder: output.root=DIR or output.run_dir=DIR)"
        return msg
    return str(e) or type(e).__name__


def _report_error(e: BaseException) -> str:
    if _full_error():
        traceback.print_exception(e)
    line = _one_line(e)
    print(f"\ncrelu-train: error: {line}", file=sys.stderr, flush=True)
    return line


def _job_run_dir(cfg: DictConfig) -> str | None:
    """Best guess of a failed job's run directory (for the sweep table), or None."""
    try:
        if cfg.output.run_dir:
            return str(cfg.output.run_dir)
        from crelu.protocols.runner import resolve_job

        try:
            from crelu.training.run import resolve_run_dir
        except ImportError:
            from crelu.training.trainer import resolve_run_dir

        return str(resolve_run_dir(resolve_job(cfg))[0])
    except Exception:
        return None


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    from crelu.data.cifar import DataNotFoundError
    from crelu.models.plan import ModelConfigError
    from crelu.protocols.runner import SkippedJob, run
    from crelu.results.record import RecordError
    from crelu.sweep import report_outcome
    from crelu.training.checkpoint import CheckpointError
    from crelu.training.engine import DivergedError

    known = (DataNotFoundError, ModelConfigError, CheckpointError, DivergedError, RecordError, ValueError, OSError)
    try:  # another job holds the run directory (crelu.training.run's lock)
        from crelu.training.lock import RunLockedError

        known = (*known, RunLockedError)
    except ImportError:
        pass
    sweeping = _in_sweep()
    try:
        result = run(cfg)
    except SkippedJob as e:
        log.info("nothing to do: %s", e)
        report_outcome("skipped", reason=str(e))
        return None
    except known as e:
        line = _report_error(e)
        if not sweeping:
            sys.exit(2)
        # one failing job must not stop a sweep: report it (crelu.sweep's table) and let the others run
        status = "diverged" if isinstance(e, DivergedError) else "failed"
        report_outcome(status, run_dir=_job_run_dir(cfg), reason=line.splitlines()[0])
        return None
    except Exception as e:
        if not sweeping:
            raise  # an unexpected error: Hydra prints it (HYDRA_FULL_ERROR=1: the whole traceback)
        log.exception("job failed")  # full traceback in the job's log
        line = f"{type(e).__name__}: {e}".splitlines()[0]
        print(f"\ncrelu-train: error: {line}", file=sys.stderr, flush=True)
        report_outcome("failed", run_dir=_job_run_dir(cfg), reason=line)
        return None
    status = "skipped (already finished)" if result.skipped else result.status
    err = result.final.get("test_error")
    n_test = result.final.get("test_images")
    on = f" on {n_test} test images (dataset.test_subset)" if n_test and cfg.dataset.test_subset else ""
    log.info("%s: %s, test error %s%s", result.run_dir, status, f"{err:.2f}%" if err is not None else "n/a", on)
    report_outcome("skipped" if result.skipped else ("finished" if result.status == "finished" else "failed"),
                   run_dir=result.run_dir, test_error=err,
                   reason=None if result.status == "finished" else f"run ended with status {result.status}")
    # The Hydra objective (what an optimising sweeper minimises) is the VALIDATION error: never tune on the test
    # set.  Runs without a validation split (protocol=full) return None.
    return result.final.get("val_error")


def main() -> None:
    """Console entrypoint: refuse unknown config options, run Hydra, exit with the sweep's status."""
    bad = unknown_option_error(sys.argv[1:])
    if bad is not None:
        print(f"crelu-train: error: {bad}", file=sys.stderr, flush=True)
        sys.exit(2)
    hydra_main()
    from crelu.sweep import exit_code

    if exit_code():
        sys.exit(exit_code())


if __name__ == "__main__":
    main()
