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
                   "compile", "checkpoint_every_steps", "nan_check_every", "eval_test_every"}
_UNHASHED_DATASET = {"root", "download", "allow_modified", "workers"}
_UNHASHED_PROTOCOL = {"phase", "target_loss", "job"}  # the first two: records of older versions


_MISSING = object()


def _plain(cfg: DictConfig | dict) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


_UNHASHED_OPTIM = {"lr_from", "lr_grid"}  # the tuning file and the search grid: the lr itself is keyed
_SKIP = {"dataset": _UNHASHED_DATASET, "model": set(), "optim": _UNHASHED_OPTIM, "schedule": set(),
         "train": _UNHASHED_TRAIN,
         "protocol": _UNHASHED_PROTOCOL}


def _schema_defaults() -> dict[str, Any]:
    from crelu.config.schema import Config

    return OmegaConf.to_container(OmegaConf.structured(Config))


def config_hash(cfg: DictConfig | dict, data_digest: str | None = None) -> str:
    """8-hex digest of the result-determining part of the config and of the data it trains on.

    Only values that differ from the schema's defaults enter the digest, so a later version of the suite that
    adds a field (whose default keeps the old behaviour) still finds the runs of an earlier version.
    ``data_digest`` (:func:`crelu.data.fingerprint.data_fingerprint`'s ``digest``) makes the same command on
    another copy of the data (a subset, the official release) another run.
    """
    c, defaults = _plain(cfg), _schema_defaults()
    keyed = {
        group: {k: v for k, v in c[group].items() if k not in skip and v != defaults[group].get(k, _MISSING)}
        for group, skip in _SKIP.items()
    }
    if data_digest is not None:
        keyed = {"config": keyed, "data": data_digest}
    blob = json.dumps(keyed, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


# What a *variant* ignores on top of the unhashed fields: the job within the table (fold, protocol, packing).
# A variant is everything that changes a result except which fold/phase of a table row a job is; the *recipe* is
# a variant without its seed.  One table cell is computed from one variant's runs (crelu.tables.collect).
_NOT_VARIANT = {"protocol": {"name", "fold", "job", "pack"}}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def recipe_id(cfg: DictConfig | dict, data_digest: str | None = None) -> str:
    """8-hex digest of everything that changes a run's result except its fold/protocol job and its seed.

    ``data_digest`` is the training data's fingerprint digest (:mod:`crelu.data.fingerprint`): the same recipe
    on another copy of the data is another recipe.  Fields at their schema default are left out (as in
    :func:`config_hash`).
    """
    c, defaults = _plain(cfg), _schema_defaults()
    keyed = {}
    for group, skip in _SKIP.items():
        drop = skip | _NOT_VARIANT.get(group, set()) | ({"seed"} if group == "train" else set())
        keyed[group] = {k: v for k, v in c[group].items() if k not in drop and v != defaults[group].get(k, _MISSING)}
    return _digest({"config": keyed, "data": data_digest})


def variant_id(cfg: DictConfig | dict, data_digest: str | None = None) -> str:
    """``<recipe_id>-s<seed>``: the runs of one table row that may be aggregated into one cell."""
    return f"{recipe_id(cfg, data_digest)}-s{_plain(cfg)['train']['seed']}"


def run_meta(cfg: DictConfig | dict, data_digest: str | None = None) -> dict[str, Any]:
    """The identifying fields of a run, stored as ``meta`` in its record (what tables group by).

    ``recipe`` and ``variant`` (:func:`recipe_id`, :func:`variant_id`) say which runs of a row may be aggregated
    into one table cell; ``data_digest`` names the data the run trained on.
    """
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
        "config_hash": config_hash(c, data_digest),
        "data_digest": data_digest,
        "recipe": recipe_id(c, data_digest),
        "variant": variant_id(c, data_digest),
    }


def run_key(cfg: DictConfig | dict, data_digest: str | None = None) -> str:
    """Relative directory of a run, e.g. ``table1/crelu/cifar10/kfold-3/seed0-1a2b3c4d``."""
    m = run_meta(cfg, data_digest)
    group = m["table"] or "adhoc"
    row = m["row"] or m["name"]
    proto = m["protocol"] + (f"-{m['fold']}" if m["fold"] is not None else "")
    return f"{group}/{row}/{m['dataset']}/{proto}/seed{m['seed']}-{m['config_hash']}"
