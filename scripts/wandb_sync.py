#!/usr/bin/env python
"""Upload the offline wandb runs of one profile (``make wandb-sync PROFILE=smoke``).

    python scripts/wandb_sync.py --profile paper [--dir results/wandb] [--dry-run] [--include-synced]
    python scripts/wandb_sync.py --clean-keep paper [--dir results/wandb]     # used by `make clean`

Offline runs sit in ``<dir>/wandb/offline-run-<time>-<id>/``.  Each run's profile is read from its own run file
(the ``profile`` config key the suite logs, else the first part of its group), without any network, so smoke
and paper runs in the same folder are told apart.  Runs already uploaded (wandb leaves a ``.synced`` marker)
are left out unless ``--include-synced``.  Then ``wandb sync`` uploads the rest (``wandb login`` first).

``--clean-keep PROFILE`` deletes every local run folder (offline, or the local copy of an online run) whose
profile is another one (smoke runs, test runs) and wandb's own logs; it keeps the runs of PROFILE and any run it
cannot read.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from crelu.training.loggers import OfflineRunError, offline_runs, read_offline_run


def run_profile(run: dict) -> str | None:
    return run["config"].get("profile") or (run.get("group") or "").split("/")[0] or None


def select(wandb_dir: Path, profile: str, include_synced: bool = False) -> tuple[list[Path], list[str]]:
    """(run folders to upload, notes about the others)."""
    chosen, notes = [], []
    for d in offline_runs(wandb_dir):
        try:
            run = read_offline_run(d)
        except (OfflineRunError, OSError) as e:
            notes.append(f"unreadable, left out: {d} ({e})")
            continue
        if run_profile(run) != profile:
            continue
        if not include_synced and any(d.glob("run-*.wandb.synced")):
            notes.append(f"already synced: {d}")
            continue
        chosen.append(d)
    return chosen, notes


def clean_keep(wandb_dir: Path, keep: str) -> tuple[list[Path], list[Path]]:
    """Delete the offline runs of every profile but ``keep`` (and wandb's logs); returns (removed, kept)."""
    removed, kept = [], []
    online_copies = [d for d in wandb_dir.glob("wandb/run-*") if d.is_dir() and not d.is_symlink()]
    for d in [*offline_runs(wandb_dir), *online_copies]:
        try:
            profile = run_profile(read_offline_run(d))
        except (OfflineRunError, OSError):
            profile = keep  # cannot tell: keep it
        if profile == keep:
            kept.append(d)
        else:
            shutil.rmtree(d)
            removed.append(d)
    for junk in [*wandb_dir.glob("wandb/debug*.log"), *wandb_dir.glob("wandb/latest-run")]:
        junk.unlink()  # wandb's own logs and its latest-run link
    if not kept:
        shutil.rmtree(wandb_dir, ignore_errors=True)
    return removed, kept


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", help="paper | smoke | ... (the run's experiment.profile)")
    p.add_argument("--clean-keep", metavar="PROFILE", help="delete the offline runs of every other profile")
    p.add_argument("--dir", default="results/wandb", help="the logger's dir (logger.dir)")
    p.add_argument("--dry-run", action="store_true", help="list the runs, upload nothing")
    p.add_argument("--include-synced", action="store_true", help="upload runs already synced once again")
    args = p.parse_args(argv)
    if args.clean_keep:
        if Path(args.dir).is_dir():
            removed, kept = clean_keep(Path(args.dir), args.clean_keep)
            print(f"{args.dir}: removed {len(removed)} offline run(s), kept {len(kept)} of profile {args.clean_keep!r}")
        return 0
    if not args.profile:
        p.error("--profile is required")
    if not Path(args.dir).is_dir():
        print(f"no offline wandb runs: {args.dir} does not exist", file=sys.stderr)
        return 1
    chosen, notes = select(Path(args.dir), args.profile, args.include_synced)
    for n in notes:
        print(n)
    for d in chosen:
        print(f"{'would sync' if args.dry_run else 'sync'}: {d}")
    print(f"{len(chosen)} offline run(s) of profile {args.profile!r} under {args.dir}")
    if args.dry_run or not chosen:
        return 0
    return subprocess.call([sys.executable, "-m", "wandb", "sync", *map(str, chosen)])


if __name__ == "__main__":
    sys.exit(main())
