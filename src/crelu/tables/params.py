"""Parameter counts of every paper model against the paper's (docs/recipes.md).

Every row of :data:`crelu.tables.rows.ROWS` is built with :func:`crelu.models.build_model` for each of its
datasets (10 / 100 / 1000 classes) and counted with ``PaperNet.num_parameters()`` (weights, biases, BN
affine).
The paper's counts come from ``results/paper_params.csv`` (Table 1 and Table 5 only; empty elsewhere).

Acceptance (docs/recipes.md): |ours − paper| / paper ≤ 3% for Table 1 rows, ≤ 0.6% for Table 5 rows; or, for
Table 1, the exact ratios crelu/baseline ∈ [1.99, 2.01], double/baseline ∈ [3.98, 4.00],
crelu_half/baseline ∈ [0.49, 0.51].  The paper prints Table 1 as nominal multiples of 1.4M, so the ratios are
the sharper check there.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from crelu.models import build_model
from crelu.tables.reference import PaperReference
from crelu.tables.render import DATASET_TITLES
from crelu.tables.rows import DATASET_CLASSES, ROWS, model_config

__all__ = ["PARAMS_COLUMNS", "count_params", "params_frame", "params_markdown"]

PARAMS_COLUMNS = ["table", "row", "dataset", "params", "paper_params", "rel_diff"]


def count_params(table: str, row: str, dataset: str) -> int:
    """Parameters of the model of ``ROWS[table][row]`` built for ``dataset``'s class count.

    Built on the ``meta`` device (shapes only, no memory or init cost); the count is identical to a CPU build.
    """
    cfg = model_config(table, row)
    with torch.device("meta"):
        net = build_model(cfg, DATASET_CLASSES[dataset])
    return int(net.num_parameters())


def params_frame(ref: PaperReference) -> pd.DataFrame:
    """One row per (table, row, dataset) of ROWS: ``params``, ``paper_params`` (NaN if none), ``rel_diff``."""
    rows = []
    for table, defs in ROWS.items():
        for rd in defs.values():
            for ds in rd.datasets:
                n = count_params(table, rd.row, ds)
                paper = ref.params(table, rd.row, ds)
                rows.append(
                    {
                        "table": table,
                        "row": rd.row,
                        "dataset": ds,
                        "params": n,
                        "paper_params": paper if paper is not None else math.nan,
                        "rel_diff": (n / paper - 1.0) if paper else math.nan,
                    }
                )
    df = pd.DataFrame(rows, columns=PARAMS_COLUMNS)
    df["paper_params"] = df["paper_params"].astype("Int64")
    return df


def params_markdown(df: pd.DataFrame) -> str:
    lines = [
        "## Parameter counts: our models against the paper",
        "",
        "| table | row | dataset | params | paper | rel. diff |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in df.itertuples(index=False):
        paper = "–" if pd.isna(r.paper_params) else f"{int(r.paper_params) / 1e6:g}M"
        diff = "" if pd.isna(r.rel_diff) else f"{100 * r.rel_diff:+.2f}%"
        label = ROWS[r.table][r.row].label
        lines.append(
            f"| {r.table} | {label} (`{r.row}`) | {DATASET_TITLES.get(r.dataset, r.dataset)} | "
            f"{r.params:,} | {paper} | {diff} |"
        )
    lines += [
        "",
        "Notes:",
        "",
        "* Counts include biases and BatchNorm affine parameters (PaperNet.num_parameters()).",
        "* Table 1 prints nominal multiples of 1.4M (2.8M = 2 × 1.4M, 5.6M = 4 × 1.4M); compare ratios there "
        "(docs/recipes.md).",
        "* The paper reports no counts for Table 2 or for the Table 4 rows outside Table 5.",
        "",
    ]
    return "\n".join(lines)
