"""Run records on disk: atomic I/O, deterministic run keys, the ``run.json`` schema."""

from crelu.results.io import atomic_torch_save, atomic_write_json, atomic_write_text, read_json
from crelu.results.record import RECORD_SCHEMA_VERSION, RunRecord, load_record
from crelu.results.runkey import config_hash, run_key, run_meta

__all__ = [
    "RECORD_SCHEMA_VERSION",
    "RunRecord",
    "atomic_torch_save",
    "atomic_write_json",
    "atomic_write_text",
    "config_hash",
    "load_record",
    "read_json",
    "run_key",
    "run_meta",
]
