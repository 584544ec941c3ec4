"""The paper's table rows: the single source of which model each row is (PAPER_SPEC §2.1-2.3, §5).

``ROWS[table][row]`` is a :class:`RowDef`.  ``row`` is the ``meta.row`` of the run records (and the
``experiment.row`` of the Hydra experiment configs, which must agree with :attr:`RowDef.model`);
``paper_model`` is the model name in ``results/paper_reference.csv`` (PAPER_SPEC Appendix B).

:attr:`RowDef.model` holds ``family`` plus the row-specific ``ModelConfig`` fields.  The family-wide recipe
(dropout rates, etc.) lives in the family's model config; the few family fields that matter here are set in
:data:`FAMILY_MODEL` and merged into every row of that family.

Placement and halving rules, with their tags:

* Table 1 (ConvPool-CNN-C): CReLU/AVR on conv1..conv8, never on the classifier conv9 (INFERRED, forced by the
  parameter counts, PAPER_SPEC §2.1); "+ (half)" halves conv1..conv8.
* Table 2 (VGG): CReLU after conv1 / conv1,3 / conv1,3,5 with those layers' filters halved [PAPER].
* Tables 4/5 (All-CNN-B): CReLU/AVR after the listed convs [PAPER]; CReLU (conv1,4,7) halves 1, 4, 7 [PAPER];
  CReLU (all) halves every conv including the classifier conv12 -> 500 filters + CReLU (INFERRED, forced by
  the 4.7M count, PAPER_SPEC §2.3); AVR rows keep the baseline filters (INFERRED).  ``dropout_input = 0``
  (All-CNN-B has no input dropout).
* Table 5 reuses the Table 4 rows it reports; its other rows (AlexNet, FriedNet, PrunedNet) are other papers'
  numbers, listed in :data:`REFERENCE_ONLY` and shown with the paper's values only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "DATASET_CLASSES",
    "FAMILY_MODEL",
    "REFERENCE_ONLY",
    "ROWS",
    "TABLE_DATASETS",
    "RowDef",
    "model_config",
    "row_def",
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

FAMILY_MODEL: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "convpool_c": MappingProxyType({"family": "convpool_c"}),
        "vgg": MappingProxyType({"family": "vgg", "init": "msr_fanout"}),
        "allcnn_b": MappingProxyType({"family": "allcnn_b", "dropout_input": 0.0}),
    }
)


@dataclass(frozen=True)
class RowDef:
    """One row of a paper table: how to build its model and how to find its numbers."""

    table: str  # "table1" | "table2" | "table4" | "table5"
    row: str  # meta.row of its run records
    paper_model: str  # model name in paper_reference.csv
    label: str  # the row as the paper prints it
    family: str
    overrides: Mapping[str, Any] = field(default_factory=dict)  # row-specific ModelConfig fields
    record_tables: tuple[str, ...] = ()  # meta.table values whose runs fill this row (default: (table,))

    @property
    def model(self) -> dict[str, Any]:
        """``family`` + family defaults + row overrides: the ``model`` config fields of this row."""
        return {**FAMILY_MODEL[self.family], **_plain(self.overrides)}

    @property
    def datasets(self) -> tuple[str, ...]:
        return TABLE_DATASETS[self.table]

    @property
    def sources(self) -> tuple[str, ...]:
        return self.record_tables or (self.table,)


def _plain(m: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: (
            {a: list(v) for a, v in val.items()}
            if isinstance(val, Mapping)
            else (list(val) if isinstance(val, (list, tuple)) else val)
        )
        for k, val in m.items()
    }


def _r(lo: int, hi: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1))


def _crelu(layers, halve=()) -> dict[str, Any]:
    d: dict[str, Any] = {"activation_layers": {"crelu": tuple(layers)}}
    if halve:
        d["halve_layers"] = tuple(halve)
    return d


def _avr(layers) -> dict[str, Any]:
    return {"activation_layers": {"avr": tuple(layers)}}


_T1 = [
    ("baseline", "Baseline", {}),
    ("double", "+ (double)", {"width_mult": 2.0}),
    ("avr", "AVR", {"activation": "avr"}),
    ("crelu", "CReLU", _crelu(_r(1, 8))),
    ("crelu_half", "+ (half)", _crelu(_r(1, 8), _r(1, 8))),
]
_T2 = [
    ("vgg", "vgg", "VGG", {}),
    ("crelu_conv1", "vgg_crelu_conv1", "(conv1)", _crelu((1,), (1,))),
    ("crelu_conv1_3", "vgg_crelu_conv1_3", "(conv1,3)", _crelu((1, 3), (1, 3))),
    ("crelu_conv1_3_5", "vgg_crelu_conv1_3_5", "(conv1,3,5)", _crelu((1, 3, 5), (1, 3, 5))),
]
_T4 = [
    ("baseline", "Baseline", {}),
    ("avr_conv1_4", "AVR (conv1–4)", _avr(_r(1, 4))),
    ("avr_conv1_7", "AVR (conv1–7)", _avr(_r(1, 7))),
    ("avr_conv1_9", "AVR (conv1–9)", _avr(_r(1, 9))),
    ("crelu_conv1_4_7", "CReLU (conv1,4,7)", _crelu((1, 4, 7), (1, 4, 7))),
    ("crelu_conv1_4", "CReLU (conv1–4)", _crelu(_r(1, 4))),
    ("crelu_conv1_7", "CReLU (conv1–7)", _crelu(_r(1, 7))),
    ("crelu_conv1_9", "CReLU (conv1–9)", _crelu(_r(1, 9))),
    ("crelu_all", "CReLU (all)", _crelu(_r(1, 12), _r(1, 12))),
]
_T5 = [
    ("baseline", "AllConvB"),
    ("crelu_all", "CReLU (all)"),
    ("crelu_conv1_4_7", "CReLU (conv1,4,7)"),
    ("crelu_conv1_4", "CReLU (conv1–4)"),
]


def _build_rows() -> dict[str, dict[str, RowDef]]:
    t4 = {row: RowDef("table4", row, row, label, "allcnn_b", MappingProxyType(o)) for row, label, o in _T4}
    return {
        "table1": {
            row: RowDef("table1", row, row, label, "convpool_c", MappingProxyType(o)) for row, label, o in _T1
        },
        "table2": {
            row: RowDef("table2", row, pm, label, "vgg", MappingProxyType(o)) for row, pm, label, o in _T2
        },
        "table4": t4,
        "table5": {
            row: RowDef("table5", row, row, label, "allcnn_b", t4[row].overrides, ("table5", "table4"))
            for row, label in _T5
        },
    }


ROWS: Mapping[str, Mapping[str, RowDef]] = MappingProxyType(
    {t: MappingProxyType(rows) for t, rows in _build_rows().items()}
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


def row_def(table: str, row: str) -> RowDef:
    try:
        return ROWS[table][row]
    except KeyError:
        known = {t: sorted(r) for t, r in ROWS.items()}
        raise KeyError(f"unknown table row {table}/{row}; known rows: {known}") from None


def model_config(table: str, row: str):
    """A ``ModelConfig`` (schema defaults + this row's fields) for building the row's model."""
    from crelu.config.schema import ModelConfig

    return ModelConfig(**row_def(table, row).model)
