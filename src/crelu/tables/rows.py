"""The paper's table rows, derived from the experiment configs (a row is declared once: its YAML file).

``ROWS[table][row]`` is a :class:`RowDef` built from ``configs/experiment/<table>/<row>.yaml`` (plus the rows of
other tables whose ``experiment.also_in`` names ``table``; Table 5 re-reports four Table 4 runs that way), via
:func:`crelu.config.experiments.experiment_entries`.  The experiment config's ``experiment`` block gives

* ``row``: the ``meta.row`` of the run records;
* ``label``: the row as the paper prints it;
* ``paper_model``: the model name in ``results/paper_reference.csv`` (default: ``row``).

:attr:`RowDef.model` is the row's ``model`` config as Hydra composes it (the same composition the training
CLI uses), so the tables, the parameter counts and the training runs can never disagree about a row's network.
Rows are listed in the paper's order (their first appearance in ``paper_reference.csv``); rows the paper does
not have come after, by name.  Adding a row = one YAML file (+ its paper values in the CSV, if any).

Table 5's other rows (AlexNet, FriedNet, PrunedNet) are other papers' numbers: :data:`REFERENCE_ONLY`, shown
with the paper's values only.  ``CRELU_CONFIG_DIR`` points everything at another config tree.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from crelu.config.compose import config_dir

__all__ = [
    "DATASET_CLASSES",
    "REFERENCE_ONLY",
    "ROWS",
    "TABLE_DATASETS",
    "RowDef",
    "model_config",
    "row_def",
    "table_rows",
]

DATASET_CLASSES = MappingProxyType({"cifar10": 10, "cifar100": 100, "imagenet": 1000})

TABLE_DATASETS = MappingProxyType(
    {
        "table1": ("cifar10", "cifar100"),
        "table2": ("cifar10", "cifar100"),
        "table4": ("imagenet",),
        "table5": ("imagenet",),
    }
)

# Table 5 rows from other papers: (paper_reference.csv model name, label).  No model is built for these.
REFERENCE_ONLY: Mapping[str, tuple[tuple[str, str], ...]] = MappingProxyType(
    {
        "table5": (
            ("alexnet", "AlexNet"),
            ("friednet", "FriedNet (FastFood-32-AD)"),
            ("prunednet", "PrunedNet"),
        ),
    }
)


@dataclass(frozen=True)
class RowDef:
    """One row of a paper table: which experiment config trains it and how to find its numbers."""

    table: str  # "table1" | "table2" | "table4" | "table5"
    row: str  # meta.row of its run records
    paper_model: str  # model name in paper_reference.csv
    label: str  # the row as the paper prints it
    experiment: str  # Hydra experiment option, e.g. "table1/crelu"
    record_tables: tuple[str, ...] = ()  # meta.table values whose runs fill this row (default: (table,))
    config_root: str = ""  # the config tree it was read from

    @property
    def model(self) -> dict[str, Any]:
        """The row's ``model`` config fields, as Hydra composes ``experiment=<experiment>``."""
        return dict(_composed_model(self.config_root, self.experiment))

    @property
    def family(self) -> str:
        return str(self.model["family"])

    @property
    def datasets(self) -> tuple[str, ...]:
        return TABLE_DATASETS[self.table]

    @property
    def sources(self) -> tuple[str, ...]:
        return self.record_tables or (self.table,)


@functools.lru_cache(maxsize=256)
def _composed_model(root: str, experiment: str) -> Mapping[str, Any]:
    """The ``model`` node Hydra composes for ``experiment=<experiment>``.

    Composed directly from the three places a row's model can come from (the schema's defaults, the model group
    option the experiment selects, the experiment's own ``model:`` block), which is what Hydra does for these
    files, in milliseconds instead of seconds; anything else (a model option with its own defaults list, an
    interpolation) goes through Hydra's real compose.  tests/test_models_and_configs.py checks that both agree
    for every row.
    """
    import yaml
    from omegaconf import OmegaConf

    from crelu.config.schema import ModelConfig

    base = Path(root)
    exp = yaml.safe_load((base / "experiment" / f"{experiment}.yaml").read_text()) or {}
    primary = yaml.safe_load((base / "config.yaml").read_text()) or {}
    choice = next((d["model"] for d in primary.get("defaults", []) if isinstance(d, dict) and "model" in d), None)
    for d in exp.get("defaults", []) or []:
        if isinstance(d, dict):
            for k, v in d.items():
                if k.replace("override", "").strip() in ("/model", "model"):
                    choice = v
    group = yaml.safe_load((base / "model" / f"{choice}.yaml").read_text()) if choice else {}
    layers = [group or {}, exp.get("model") or {}]
    simple = all("defaults" not in x and "${" not in str(x) for x in layers)
    if not simple:
        return _hydra_model(root, experiment)
    node = OmegaConf.merge(OmegaConf.structured(ModelConfig), *layers)
    return MappingProxyType(OmegaConf.to_container(node, resolve=True))


def _hydra_model(root: str, experiment: str) -> Mapping[str, Any]:
    import os

    from omegaconf import OmegaConf

    from crelu.config.compose import compose_config

    old = os.environ.get("CRELU_CONFIG_DIR")
    os.environ["CRELU_CONFIG_DIR"] = root
    try:
        cfg = compose_config([f"experiment={experiment}"])
    finally:
        if old is None:
            os.environ.pop("CRELU_CONFIG_DIR", None)
        else:
            os.environ["CRELU_CONFIG_DIR"] = old
    return MappingProxyType(OmegaConf.to_container(cfg.model, resolve=True))


def _paper_order(table: str) -> dict[str, int]:
    from crelu.tables.reference import default_data_path, load_paper_reference

    path = default_data_path("paper_reference.csv")
    if not path.exists():
        return {}
    df = load_paper_reference(path)
    return {m: i for i, m in enumerate(dict.fromkeys(df.loc[df["table"] == table, "model"]))}


@functools.lru_cache(maxsize=16)
def _load(root: str) -> Mapping[str, Mapping[str, RowDef]]:
    from crelu.config.experiments import experiment_entries

    out = {}
    for table in TABLE_DATASETS:
        order = _paper_order(table)
        defs = []
        for e in experiment_entries(table, root):
            sources = (table,) if e.record_table == table else (table, e.record_table)
            defs.append(RowDef(table, e.row, e.paper_model, e.label, e.experiment, sources, root))
        defs.sort(key=lambda d: (order.get(d.paper_model, len(order)), d.row))
        out[table] = MappingProxyType({d.row: d for d in defs})
    return MappingProxyType(out)


def table_rows(root: str | None = None) -> Mapping[str, Mapping[str, RowDef]]:
    """``{table: {row: RowDef}}`` read from ``root`` (default: the active config dir)."""
    return _load(str(root if root is not None else config_dir()))


class _Rows(Mapping):
    """``ROWS``: :func:`table_rows` of the active config dir, read on first use."""

    def _rows(self) -> Mapping[str, Mapping[str, RowDef]]:
        return table_rows()

    def __getitem__(self, key: str) -> Mapping[str, RowDef]:
        return self._rows()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows())

    def __len__(self) -> int:
        return len(self._rows())

    def __repr__(self) -> str:
        return f"ROWS({ {t: list(r) for t, r in self._rows().items()} })"


ROWS: Mapping[str, Mapping[str, RowDef]] = _Rows()


def row_def(table: str, row: str) -> RowDef:
    try:
        return ROWS[table][row]
    except KeyError:
        known = {t: list(r) for t, r in ROWS.items()}
        raise KeyError(f"unknown table row {table}/{row}; known rows: {known}") from None


def model_config(table: str, row: str):
    """A ``ModelConfig`` (schema defaults + this row's fields) for building the row's model."""
    from crelu.config.schema import ModelConfig

    return ModelConfig(**row_def(table, row).model)
