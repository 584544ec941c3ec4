"""Regenerate the paper's tables from run records on disk (never from numbers typed into code).

``python -m crelu.tables {table1,table2,table4,table5,params,all} [--runs DIR] [--out DIR] [--profile NAME]``

For every table it writes, atomically, under ``--out``:

* ``tableN.md`` / ``tableN.tex``: ours | paper | Δ per metric, one block per dataset, with footnotes;
* ``tableN.csv``: one row per cell (row, dataset, metric, ours, SE, paper, diff, runs used / expected, flags);
* ``tableN_runs.csv``: one row per run and metric with its ``run_dir``, the file the value came from, its
  ``variant``/``recipe``/``seed`` and whether the cell uses it (``used``), so every cell traces back to its runs;
* ``tableN_variants.csv``: every variant of every (row, dataset): folds, Single, shown or not;
* ``tableN_claims.{md,csv}`` (``tableN`` with claims in ``results/paper_claims.csv``): the paper's qualitative
  claims with our numbers, 95% intervals and a verdict from a paired test (:mod:`crelu.tables.claims`).

``params`` writes ``params.csv`` / ``params.md`` (every paper model built and counted, against the paper).
Row definitions: :mod:`crelu.tables.rows`; paper values: ``results/paper_reference.csv`` and
``results/paper_params.csv`` (:mod:`crelu.tables.reference`).
"""

from __future__ import annotations

import os
from pathlib import Path

from crelu.results.io import atomic_write_text
from crelu.tables.build import TABLE_SPECS, Cell, Table, build_table
from crelu.tables.collect import RunIndex
from crelu.tables.reference import PaperReference, load_paper_params, load_paper_reference
from crelu.tables.rows import ROWS, RowDef, model_config, row_def

__all__ = [
    "ROWS",
    "TABLES",
    "Cell",
    "PaperReference",
    "RowDef",
    "RunIndex",
    "Table",
    "build_table",
    "load_paper_params",
    "load_paper_reference",
    "model_config",
    "row_def",
    "write_params",
    "write_table",
]

TABLES = tuple(TABLE_SPECS)


def write_table(table: Table, out: str | os.PathLike) -> list[Path]:
    """Write ``<out>/<name>.{md,csv,tex}``, ``<out>/<name>_runs.csv`` and ``_variants.csv``; return the paths."""
    from crelu.tables.render import to_latex, to_markdown

    out = Path(out)
    paths = {
        "md": out / f"{table.name}.md",
        "csv": out / f"{table.name}.csv",
        "tex": out / f"{table.name}.tex",
        "runs": out / f"{table.name}_runs.csv",
        "variants": out / f"{table.name}_variants.csv",
    }
    atomic_write_text(paths["md"], to_markdown(table))
    atomic_write_text(paths["csv"], table.cells_frame().to_csv(index=False))
    atomic_write_text(paths["tex"], to_latex(table))
    atomic_write_text(paths["runs"], table.runs_frame().to_csv(index=False))
    atomic_write_text(paths["variants"], table.variants_frame().to_csv(index=False))
    return list(paths.values())


def write_params(ref: PaperReference, out: str | os.PathLike) -> list[Path]:
    """Write ``<out>/params.csv`` and ``<out>/params.md``; return the paths."""
    from crelu.tables.params import params_frame, params_markdown

    out = Path(out)
    df = params_frame(ref)
    csv_path, md_path = out / "params.csv", out / "params.md"
    atomic_write_text(csv_path, df.to_csv(index=False))
    atomic_write_text(md_path, params_markdown(df))
    return [csv_path, md_path]
