"""Which experiment configs make up a paper table: derived from ``configs/experiment/<table>/`` alone.

A table row is declared once, by its experiment config ``configs/experiment/<table>/<row>.yaml`` (its
``experiment`` block names the row, the label the paper prints and the paper's model name).  A table that
re-reports rows trained for another table (Table 5 shows four Table 4 runs) is listed in those rows'
``experiment.also_in`` (``{table5: AllConvB}``: the table and the label there).

:func:`table_experiments` is also the OmegaConf resolver ``${crelu_rows:<table>}`` that the table sweeps in
``configs/table/`` use, so a new YAML file is picked up by the sweep, the tables and the tests alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["ExperimentEntry", "experiment_entries", "register_resolvers", "table_experiments"]


@dataclass(frozen=True)
class ExperimentEntry:
    """One experiment config as a row of ``table``."""

    table: str  # the table shown
    experiment: str  # Hydra option, e.g. "table4/baseline"
    row: str  # meta.row of its run records
    record_table: str  # meta.table of its run records (differs from ``table`` for also_in rows)
    label: str  # the row as the paper prints it in ``table``
    paper_model: str  # model name in paper_reference.csv


def _experiment_root(config_dir: str | Path | None) -> Path:
    if config_dir is None:
        from crelu.config.compose import config_dir as _cd

        config_dir = _cd()
    return Path(config_dir) / "experiment"


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    return data.get("experiment") or {}


def experiment_entries(table: str, config_dir: str | Path | None = None) -> list[ExperimentEntry]:
    """Every row of ``table``: its own configs (sorted by file name), then other tables' rows with ``also_in``."""
    root = _experiment_root(config_dir)
    out = []
    for path in sorted((root / table).glob("*.yaml")):
        e = _read(path)
        row = str(e.get("row") or path.stem)
        out.append(ExperimentEntry(table, f"{table}/{path.stem}", row, str(e.get("table") or table),
                                   str(e.get("label") or row), str(e.get("paper_model") or row)))
    for path in sorted(root.glob("*/*.yaml")):
        if path.parent.name == table:
            continue
        e = _read(path)
        also = e.get("also_in") or {}
        if table in also:
            row = str(e.get("row") or path.stem)
            out.append(ExperimentEntry(table, f"{path.parent.name}/{path.stem}", row,
                                       str(e.get("table") or path.parent.name), str(also[table] or row),
                                       str(e.get("paper_model") or row)))
    return out


def table_experiments(table: str, config_dir: str | Path | None = None) -> str:
    """The comma list of Hydra experiment options of ``table`` (a sweep value); error if there is none."""
    entries = experiment_entries(table, config_dir)
    if not entries:
        raise ValueError(f"no experiment configs for table {table!r} under {_experiment_root(config_dir)}")
    return ",".join(e.experiment for e in entries)


def register_resolvers() -> None:
    """Register ``${crelu_rows:<table>}`` (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("crelu_rows"):
        OmegaConf.register_new_resolver("crelu_rows", lambda table: table_experiments(str(table)))
