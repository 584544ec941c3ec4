"""Value checks of a composed config: impossible or meaningless settings are refused before anything trains.

The schema (:mod:`crelu.config.schema`) checks names and types; this module checks values, and every message
names the offending key, e.g. ``train.batch_size=0 must be >= 1``.  :func:`check_values` runs at the end of
``validate_config`` (before data loads); :func:`check_steps` needs the size of the training set, so the
training code calls it right after loading the data.  Both raise :class:`~crelu.config.schema.ConfigError`.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)

__all__ = ["check_device", "check_steps", "check_values", "steps_per_epoch"]


def _error(msg: str):
    from crelu.config.schema import ConfigError

    return ConfigError(msg)


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node.get(part) if hasattr(node, "get") else getattr(node, part, None)
        if node is None:
            return None
    return node


def _at_least(cfg, key: str, low: int, *, optional: bool = False) -> None:
    v = _get(cfg, key)
    if v is None and optional:
        return
    if v is None or v < low:
        hint = " (or null)" if optional else ""
        raise _error(f"{key}={v} must be >= {low}{hint}")


def _positive(cfg, key: str) -> None:
    v = _get(cfg, key)
    if v is None or not math.isfinite(v) or v <= 0:
        raise _error(f"{key}={v} must be a finite number > 0")


def check_device(spec: str) -> None:
    """``train.device``: auto, cpu, cuda or cuda:N, and a CUDA device only where one exists."""
    import torch

    if spec == "auto":
        return
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise _error(f"train.device={spec} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _error(f"train.device={spec} but CUDA is not available on this machine; use train.device=auto "
                         "(or cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise _error(f"train.device={spec} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise _error(f"train.device={spec} is not supported; use auto, cpu, cuda or cuda:N")


def _train_size_bound(cfg) -> int | None:
    """Upper bound on the training-set size known from the config alone (``dataset.train_subset``), or None."""
    n = _get(cfg, "dataset.train_subset")
    if n is None:
        return None
    p = cfg.protocol
    if p.name == "single" and _get(cfg, "protocol.phase") != "phase2" and p.holdout and 0 < p.holdout < n:
        return n - p.holdout
    return n


def check_values(cfg) -> None:
    """Refuse values that cannot train or would record a meaningless result; each error names its key."""
    _at_least(cfg, "train.batch_size", 1)
    _at_least(cfg, "train.eval_batch_size", 1)
    _at_least(cfg, "train.max_steps_per_epoch", 1, optional=True)
    _at_least(cfg, "train.checkpoint_every_steps", 1, optional=True)
    _at_least(cfg, "train.log_every", 1)
    _at_least(cfg, "schedule.epochs", 1)
    _positive(cfg, "optim.lr")
    _positive(cfg, "model.width_scale")
    _positive(cfg, "model.width_mult")
    for key in ("optim.momentum", "optim.weight_decay", "optim.dampening"):
        v = _get(cfg, key)
        if v is not None and (not math.isfinite(v) or v < 0):
            raise _error(f"{key}={v} must be >= 0")
    _at_least(cfg, "dataset.train_subset", 1, optional=True)
    _at_least(cfg, "dataset.test_subset", 1, optional=True)
    _at_least(cfg, "dataset.shift", 0)
    _at_least(cfg, "protocol.pack", 1)
    if cfg.protocol.name == "kfold":
        _at_least(cfg, "protocol.folds", 2)
    sched = cfg.schedule
    if sched.name == "multistep":
        ms = list(sched.milestones or [])
        if any(m < 1 for m in ms):
            raise _error(f"schedule.milestones={ms}: every milestone must be an epoch >= 1")
        if any(b <= a for a, b in zip(ms, ms[1:])):
            raise _error(f"schedule.milestones={ms} must be strictly increasing, e.g. {sorted(set(ms))}")
        late = [m for m in ms if m >= sched.epochs]
        if late:
            log.warning("schedule.milestones %s are >= schedule.epochs=%d: those learning-rate drops never happen",
                        late, sched.epochs)
        _positive(cfg, "schedule.gamma")
    elif sched.name == "step":
        _at_least(cfg, "schedule.step_size", 1)
        _positive(cfg, "schedule.gamma")
    check_device(str(cfg.train.device))
    bound = _train_size_bound(cfg)
    if bound is not None:
        check_steps(cfg, bound)


def steps_per_epoch(cfg, n_train_examples: int) -> int:
    """Optimizer steps one epoch of ``n_train_examples`` images takes under ``cfg`` (batching and step cap)."""
    bs = cfg.train.batch_size
    steps = n_train_examples // bs if cfg.train.drop_last else -(-n_train_examples // bs)
    cap = cfg.train.max_steps_per_epoch
    return min(steps, cap) if cap is not None else steps


def check_steps(cfg, n_train_examples: int) -> None:
    """Refuse a run whose epochs take zero optimizer steps (``train.batch_size`` > the training images with
    ``train.drop_last``): it would record an untrained model's metrics as a finished run."""
    if steps_per_epoch(cfg, n_train_examples) >= 1:
        return
    sub = _get(cfg, "dataset.train_subset")
    source = f" (dataset.train_subset={sub})" if sub is not None else ""
    raise _error(f"train.batch_size={cfg.train.batch_size} is larger than the {n_train_examples} training images of "
                 f"this run{source}: with train.drop_last=true an epoch takes 0 steps; lower train.batch_size or "
                 "raise dataset.train_subset")
