"""CLI: ``python -m crelu.report [--profile P] [--runs DIR] [--results DIR] [--out FILE]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crelu.report.html import write_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m crelu.report", description=__doc__)
    p.add_argument("--profile", default="paper", help="run profile (records of other profiles are skipped)")
    p.add_argument("--runs", default=None, help="run records (default: results/runs/<profile>)")
    p.add_argument("--results", default=None,
                   help="folder with tuning/ and figures/ (default: results, or results/<profile> off paper)")
    p.add_argument("--out", default=None, help="HTML file (default: <results>/report.html)")
    p.add_argument("--tables", default="table1,table2,table4,table5", help="comma list of tables to include")
    a = p.parse_args(argv)
    results = Path(a.results) if a.results else (Path("results") if a.profile == "paper"
                                                  else Path("results") / a.profile)
    runs = Path(a.runs) if a.runs else Path("results") / "runs" / a.profile
    out = Path(a.out) if a.out else results / "report.html"
    summary = write_report(out, runs=runs, results=results, profile=a.profile, tables=a.tables.split(","))
    for line in summary:
        print(line)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
