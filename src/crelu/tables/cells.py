"""The data model of a built table: specs, cells (ours vs paper) and the runs behind them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["IMAGENET_METRICS", "METRIC_HEADERS", "NAN", "TABLE_SPECS", "Cell", "Table", "TableSpec"]

NAN = math.nan
IMAGENET_METRICS = ("top1_center", "top5_center", "top1_10patch", "top5_10patch")
METRIC_HEADERS = {
    "single_train": "Single train",
    "single_test": "Single test",
    "average": "Average ± SE",  # ± 95% CI half-width when several seeds
    "vote": "Vote",
    "vote_majority": "Vote (majority)",
    "params": "params",
    "top1_center": "top-1",
    "top5_center": "top-5",
    "top1_10patch": "top-1 (10 patches)",
    "top5_10patch": "top-5 (10 patches)",
}


@dataclass(frozen=True)
class TableSpec:
    title: str
    shown: tuple[str, ...]  # metrics shown in md/tex, in order
    extra: tuple[str, ...] = ()  # metrics kept in the CSV only
    headers: tuple[tuple[str, str], ...] = ()  # per-table header overrides


TABLE_SPECS = {
    "table1": TableSpec(
        "Table 1: ConvPool-CNN-C on CIFAR (test error %)",
        ("single_train", "single_test", "average", "vote", "params"),
        ("vote_majority",),
    ),
    "table2": TableSpec(
        "Table 2: VGG on CIFAR (test error %)",
        ("single_test", "average", "vote"),
        ("vote_majority",),
        (("single_test", "Single"),),
    ),
    "table4": TableSpec("Table 4: All-CNN-B on ImageNet (validation error %)", IMAGENET_METRICS),
    "table5": TableSpec(
        "Table 5: ImageNet comparison (validation error %, params)", (*IMAGENET_METRICS, "params")
    ),
}


@dataclass
class Cell:
    """One (row, dataset, metric) of a table: our number, the paper's, and where ours came from."""

    table: str
    row: str
    label: str
    dataset: str
    metric: str
    ours: float = NAN
    ours_se: float = NAN
    ours_se_ddof0: float = NAN
    paper: float = NAN
    paper_se: float = NAN
    n_runs: int = 0
    n_expected: int | None = None
    marker: str = ""  # e.g. "7/10 folds"
    flag: str = ""  # "†": Single target loss never reached
    note: str = ""
    reference_only: bool = False  # another paper's row: no run of ours exists
    ci_low: float = NAN  # 95% interval: t over seeds (≥ 2 seeds) or t over folds from the fold SE (1 seed)
    ci_high: float = NAN
    n_seeds: int = 0  # seeds (variants of the shown recipe) behind the number
    variant: str = ""  # the variant(s) behind the number, ";"-separated
    data_mark: str = ""  # paper profile: the runs did not train on the official full training set (why, how many)

    @property
    def in_ci(self) -> bool | None:
        """Is the paper's value inside our 95% interval? None when either is missing."""
        if any(math.isnan(x) for x in (self.ci_low, self.ci_high, self.paper)) or self.is_params:
            return None
        return self.ci_low <= self.paper <= self.ci_high

    @property
    def is_params(self) -> bool:
        return self.metric == "params"

    @property
    def diff(self) -> float:
        """ours - paper (errors, percentage points) or ours / paper - 1 (params)."""
        if math.isnan(self.ours) or math.isnan(self.paper):
            return NAN
        return self.ours / self.paper - 1.0 if self.is_params else self.ours - self.paper


@dataclass
class Table:
    name: str
    spec: TableSpec
    cells: list[Cell] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    variants: list[dict[str, Any]] = field(default_factory=list)  # every variant of every (row, dataset)
    # paired samples behind each cell for the claims: (row, dataset, metric) -> {(seed, fold) or (seed,): value}
    samples: dict[tuple[str, str, str], dict[tuple, float]] = field(default_factory=dict)
    profile: str = "paper"

    def header(self, metric: str) -> str:
        return dict(self.spec.headers).get(metric, METRIC_HEADERS[metric])

    def cell(self, row: str, dataset: str, metric: str) -> Cell:
        for c in self.cells:
            if (c.row, c.dataset, c.metric) == (row, dataset, metric):
                return c
        raise KeyError((row, dataset, metric))

    def cells_frame(self) -> pd.DataFrame:
        rows = []
        for c in self.cells:
            d = {
                k: getattr(c, k)
                for k in (
                    "table",
                    "row",
                    "label",
                    "dataset",
                    "metric",
                    "ours",
                    "ours_se",
                    "ours_se_ddof0",
                    "paper",
                    "paper_se",
                )
            }
            d.update(
                diff=c.diff,
                ci_low=c.ci_low,
                ci_high=c.ci_high,
                paper_in_ci=c.in_ci,
                n_seeds=c.n_seeds,
                n_runs=c.n_runs,
                n_expected=c.n_expected,
                marker=c.marker,
                flag=c.flag,
                data_mark=c.data_mark,
                variant=c.variant,
                note=c.note,
                reference_only=c.reference_only,
            )
            rows.append(d)
        df = pd.DataFrame(rows)
        if not df.empty:
            df["n_expected"] = df["n_expected"].astype("Int64")
        return df

    def runs_frame(self) -> pd.DataFrame:
        cols = [
            "table",
            "row",
            "dataset",
            "metric",
            "value",
            "run_dir",
            "artifact",
            "protocol",
            "fold",
            "seed",
            "config_hash",
            "variant",
            "recipe",
            "used",
            "train_images",
            "train_official",
            "wandb_id",
            "finished_at",
        ]
        df = pd.DataFrame(self.runs, columns=cols)
        for col in ("fold", "seed"):
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
        return df

    def variants_frame(self) -> pd.DataFrame:
        cols = ["table", "row", "dataset", "variant", "recipe", "seed", "folds", "expected", "single", "full",
                "used", "average", "runs"]
        return pd.DataFrame(self.variants, columns=cols)
