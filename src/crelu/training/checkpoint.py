"""Checkpoints: atomic, with the previous one kept, and loadable into a model without Hydra.

``checkpoint.pt`` (and ``checkpoint.prev.pt``, the one before) in a run directory hold::

    {"format": 1, "epoch": int (epochs completed), "config": {...resolved config...},
     "model": state_dict, "optimizer": state_dict, "rng": {...}, "record": {...run.json so far...}}

Writing goes temp file -> fsync -> move the current file to ``checkpoint.prev.pt`` -> rename; a torn or
corrupt latest checkpoint therefore never costs more than one checkpoint interval: :func:`load_latest` falls back
to the previous one and says so.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from crelu.results.io import atomic_torch_save

log = logging.getLogger(__name__)

CKPT_NAME = "checkpoint.pt"
PREV_NAME = "checkpoint.prev.pt"
CKPT_FORMAT = 1


class CheckpointError(RuntimeError):
    """No usable checkpoint could be read."""


def save_checkpoint(run_dir: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``checkpoint.pt``; the one it replaces becomes ``checkpoint.prev.pt``.

    The new file is written and synced first and the current one is moved aside only then, so a write that
    fails (disk full, file-size limit: :class:`~crelu.results.io.DiskFullError`) leaves ``checkpoint.pt`` as it
    was.  A kill between the two renames leaves only ``checkpoint.prev.pt``, which :func:`load_latest` reads.
    """
    run_dir = Path(run_dir)
    path = run_dir / CKPT_NAME
    state = {"format": CKPT_FORMAT, **state}

    def move_current_aside() -> None:
        if path.exists():
            os.replace(path, run_dir / PREV_NAME)

    atomic_torch_save(state, path, before_replace=move_current_aside)
    return path


def _read(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    state = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT or "model" not in state:
        raise CheckpointError(f"{path} is not a crelu-repro checkpoint (format {CKPT_FORMAT})")
    return state


def load_latest(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """Newest readable checkpoint of ``run_dir`` (falls back to the previous one), or None if there is none."""
    run_dir = Path(run_dir)
    candidates = [p for p in (run_dir / CKPT_NAME, run_dir / PREV_NAME) if p.exists()]
    errors = []
    for i, path in enumerate(candidates):
        try:
            state = _read(path, map_location)
        except Exception as e:  # corrupt, truncated, or foreign file
            errors.append(f"{path.name}: {type(e).__name__}: {e}")
            continue
        if i > 0 or errors:
            msg = f"latest checkpoint unusable ({'; '.join(errors)}); resuming from {path.name} instead"
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)
        return state
    if errors:
        raise CheckpointError(f"no usable checkpoint in {run_dir}: " + "; ".join(errors))
    return None


def load_previous(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """``checkpoint.prev.pt`` of ``run_dir`` (the checkpoint before the latest), or None if absent or unreadable.

    Packed folds write their checkpoints one member after another; a kill in between leaves the members one
    checkpoint apart, and the members ahead step back to this one so the pack resumes together.
    """
    path = Path(run_dir) / PREV_NAME
    try:
        return _read(path, map_location) if path.exists() else None
    except Exception as e:  # corrupt or foreign: the caller falls back to training the members one by one
        log.warning("previous checkpoint %s unusable: %s", path, e)
        return None


def discard_latest(run_dir: str | os.PathLike) -> None:
    """Make ``checkpoint.prev.pt`` the latest checkpoint again (the latest one is dropped).

    Used when a packed member steps back to its previous checkpoint: on disk too, so its next write moves the
    checkpoint it resumed from (not the discarded one) to ``checkpoint.prev.pt``.
    """
    os.replace(Path(run_dir) / PREV_NAME, Path(run_dir) / CKPT_NAME)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Rebuild the trained network of a run directory or checkpoint file: returns ``(model, config)``.

    The model is in eval mode on ``map_location``; ``config`` is the run's resolved config (an OmegaConf
    DictConfig).  Used by the analysis suite and by ensemble evaluation.
    """
    from omegaconf import OmegaConf

    from crelu.models import build_model

    path = Path(path)
    if path.is_dir():
        state = load_latest(path, map_location)
        if state is None:
            raise CheckpointError(f"no checkpoint in {path}")
    else:
        state = _read(path, map_location)
    from crelu.config.schema import Config

    # merge onto the current schema: checkpoints written before a field existed get its default
    cfg = OmegaConf.merge(OmegaConf.structured(Config), state["config"])
    model = build_model(cfg.model, cfg.dataset.num_classes)
    model.load_state_dict(state["model"])
    return model.to(map_location).eval(), cfg
