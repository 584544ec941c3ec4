"""Deterministic run keys: one directory per (table, row, dataset, protocol, fold/phase, seed, recipe).

The key has no timestamp, so a relaunched sweep finds its finished runs (skipped) and unfinished ones (resumed).
The trailing 8-hex hash covers every config field that changes the result (dataset, model, optim, schedule,
train recipe, protocol), so two different recipes never share a directory, while logging/progress/output
settings do not change it.  Two jobs of the same sweep always differ in at least one keyed field.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Fields that do not change what is computed, so they do not enter the hash.
_UNHASHED_TRAIN = {"quiet", "log_every", "device", "threads", "checkpoint", "save_logits", "eval_batch_size",
                   "compile", "checkpoint_every_steps"}
_UNHASHED_DATASET = {"root", "download", "allow_modified", "workers"}
_UNHASHED_PROTOCOL = {"phase", "target_loss", "job"}


_MISSING = object()


def _plain(cfg: DictConfig | dict) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


_SKIP = {"dataset": _UNHASHED_DATASET, "model": set(), "optim": set(), "schedule": set(), "train": _UNHASHED_TRAIN,
         "protocol": _UNHASHED_PROTOCOL}


def _schema_defaults() -> dict[str, Any]:
    from crelu.config.schema import Config

    return OmegaConf.to_container(OmegaConf.structured(Config))


def config_hash(cfg: DictConfig | dict) -> str:
    """8-hex digest of the result-determining part of the config.

    Only values that differ from the schema's defaults enter the digest, so a later version of the suite that
    adds a field (whose default keeps the old behaviour) still finds the runs of an earlier version.
    """
    c, defaults = _plain(cfg), _schema_defaults()
    keyed = {
        group: {k: v for k, v in c[group].items() if k not in skip and v != defaults[group].get(k, _MISSING)}
        for group, skip in _SKIP.items()
    }
    blob = json.dumps(keyed, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def run_meta(cfg: DictConfig | dict) -> dict[str, Any]:
    """The identifying fields of a run, stored as ``meta`` in its record (what tables group by)."""
    c = _plain(cfg)
    p = c["protocol"]
    return {
        "table": c["experiment"]["table"],
        "row": c["experiment"]["row"],
        "name": c["experiment"]["name"],
        "profile": c["experiment"]["profile"],
        "dataset": c["dataset"]["name"],
        "protocol": p["name"],
        "fold": p["fold"] if p["name"] == "kfold" else None,
        "seed": c["train"]["seed"],
        "config_hash": config_hash(c),
    }


def run_key(cfg: DictConfig | dict) -> str:
    """Relative directory of a run, e.g. ``table1/crelu/cifar10/kfold-3/seed0-1a2b3c4d``."""
    m = run_meta(cfg)
    group = m["table"] or "adhoc"
    row = m["row"] or m["name"]
    proto = m["protocol"] + (f"-{m['fold']}" if m["fold"] is not None else "")
    return f"{group}/{row}/{m['dataset']}/{proto}/seed{m['seed']}-{m['config_hash']}"
