"""The paper's own numbers, read from data files (never typed into code).

* ``results/paper_reference.csv``: the paper's published numbers, copied verbatim (Tables 1, 2, 4; columns
  ``table,dataset,model,metric,value,stderr``; errors in percent) plus the rows of Table 5 (``table`` = 5; its
  parameter counts as metric ``params_m``, in millions, and the rows of the other papers it compares with).
* ``results/paper_params.csv``: the paper's parameter counts as integers (``table,row,dataset,paper_params,
  source``): Table 1 (1.4/5.6/1.4/2.8/0.7M, the same for both datasets) and Table 5.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

__all__ = [
    "PaperReference",
    "default_data_path",
    "load_paper_params",
    "load_paper_reference",
]

REFERENCE_NAME = "paper_reference.csv"
PARAMS_NAME = "paper_params.csv"
_REF_COLUMNS = ["table", "dataset", "model", "metric", "value", "stderr"]
_PARAMS_COLUMNS = ["table", "row", "dataset", "paper_params"]


def default_data_path(name: str) -> Path:
    """``results/<name>`` of the source checkout this package runs from, else of the working directory."""
    repo_results = Path(__file__).resolve().parents[3] / "results" / name
    return repo_results if repo_results.exists() else Path.cwd() / "results" / name


def load_paper_reference(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The reference CSV as a DataFrame (``table`` as "table1"..., ``value``/``stderr`` float, NaN = none)."""
    path = Path(path) if path is not None else default_data_path(REFERENCE_NAME)
    df = pd.read_csv(path, dtype={"table": str, "dataset": str, "model": str, "metric": str})
    missing = [c for c in _REF_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {_REF_COLUMNS}")
    df = df[_REF_COLUMNS].copy()
    df["table"] = "table" + df["table"].str.strip()
    if df.duplicated(["table", "dataset", "model", "metric"]).any():
        dup = df[df.duplicated(["table", "dataset", "model", "metric"], keep=False)]
        raise ValueError(f"{path}: duplicated reference entries:\n{dup}")
    return df


def load_paper_params(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The paper's parameter counts (``paper_params`` as int)."""
    path = Path(path) if path is not None else default_data_path(PARAMS_NAME)
    df = pd.read_csv(path, dtype={"table": str, "row": str, "dataset": str})
    missing = [c for c in _PARAMS_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {_PARAMS_COLUMNS}")
    df["paper_params"] = df["paper_params"].astype("int64")
    return df


class PaperReference:
    """Paper values: ``ref.get(table, dataset, model, metric) -> (value, stderr)``, NaN where none."""

    def __init__(self, reference: pd.DataFrame, params: pd.DataFrame) -> None:
        self._ref = {
            (r.table, r.dataset, r.model, r.metric): (float(r.value), float(r.stderr))
            for r in reference.itertuples(index=False)
        }
        self._params = {
            (r.table, r.row, r.dataset): int(r.paper_params) for r in params.itertuples(index=False)
        }

    @classmethod
    def load(cls, reference_path=None, params_path=None) -> PaperReference:
        return cls(load_paper_reference(reference_path), load_paper_params(params_path))

    def get(self, table: str, dataset: str, model: str, metric: str) -> tuple[float, float]:
        return self._ref.get((table, dataset, model, metric), (math.nan, math.nan))

    def params(self, table: str, row: str, dataset: str) -> int | None:
        return self._params.get((table, row, dataset))
