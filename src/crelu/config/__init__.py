"""Config schemas and Hydra helpers."""

from crelu.config.compose import compose_config, config_dir
from crelu.config.schema import SCHEMA_VERSION, Config, register_configs

__all__ = ["SCHEMA_VERSION", "Config", "compose_config", "config_dir", "register_configs"]
