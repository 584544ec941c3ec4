"""Config schemas and Hydra helpers."""

from crelu.config.compose import compose_config, config_dir
from crelu.config.schema import SCHEMA_VERSION, Config, ConfigError, register_configs, validate_config

__all__ = [
    "SCHEMA_VERSION",
    "Config",
    "ConfigError",
    "compose_config",
    "config_dir",
    "register_configs",
    "validate_config",
]
