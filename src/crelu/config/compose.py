"""Compose configs outside ``@hydra.main`` (tests, scripts, notebooks) with Hydra's real compose API."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from crelu.config.schema import register_configs


def config_dir() -> Path:
    """The repository's ``configs/`` folder (``CRELU_CONFIG_DIR`` overrides, e.g. for a copied config tree)."""
    env = os.environ.get("CRELU_CONFIG_DIR")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[3] / "configs"


def compose_config(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with ``overrides`` exactly as the command line would."""
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="crelu"):
        return compose(config_name=config_name, overrides=list(overrides))
