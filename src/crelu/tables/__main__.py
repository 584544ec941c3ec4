"""CLI: ``python -m crelu.tables {table1,table2,table4,table5,params,all}`` (also ``crelu-tables``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crelu.tables import TABLES, RunIndex, build_table, write_params, write_table
from crelu.tables.claims import load_claims, write_claims
from crelu.tables.reference import PaperReference


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m crelu.tables",
        description="Regenerate the paper's tables from run records (run.json + test_logits.pt).",
    )
    p.add_argument("what", choices=[*TABLES, "params", "all"], help="which table to build ('all': every one)")
    p.add_argument("--profile", default="paper", help="run profile; records of other profiles are skipped")
    p.add_argument(
        "--runs", default=None, help="folder searched for run.json (default: results/runs/<profile>)"
    )
    p.add_argument("--out", default="results", help="output folder (default: results)")
    p.add_argument("--reference", default=None, help="paper_reference.csv (default: the repo's results/)")
    p.add_argument("--paper-params", default=None, help="paper_params.csv (default: the repo's results/)")
    p.add_argument("--claims", default=None, help="paper_claims.csv (default: the repo's results/)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ref = PaperReference.load(args.reference, args.paper_params)
    names = list(TABLES) if args.what == "all" else ([] if args.what == "params" else [args.what])
    written: list[Path] = []
    if names:
        runs = Path(args.runs) if args.runs else Path("results") / "runs" / args.profile
        if not runs.exists():
            print(f"note: {runs} does not exist; tables will show every cell as missing", file=sys.stderr)
        index = RunIndex.scan(runs, profile=args.profile)
        print(
            f"{len(index.records)} run record(s) under {runs}"
            + (f", {len(index.unreadable)} unreadable" if index.unreadable else "")
            + (f", {len(index.foreign)} of another record schema" if index.foreign else "")
        )
        for line in index.skipped:
            print(f"skipped: {line}", file=sys.stderr)
        for name in names:
            table = build_table(name, index, ref, profile=args.profile)
            if args.profile != "paper":
                table.notes.insert(0, f"Profile {args.profile!r}: reduced models, data and schedules that exercise "
                                      "the whole pipeline; these numbers are not comparable with the paper's.")
            filled = sum(1 for c in table.cells if not c.reference_only and c.n_runs > 0)
            ours = sum(1 for c in table.cells if not c.reference_only)
            written += write_table(table, args.out)
            written += write_claims(table, ref, args.out, load_claims(args.claims) if args.claims else None)
            print(f"{name}: {filled}/{ours} cells with runs, {len(table.runs)} traced values")
    if args.what in ("params", "all"):
        written += write_params(ref, args.out)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
