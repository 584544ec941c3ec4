"""Config schemas and Hydra helpers."""

from crelu.config.schema import SCHEMA_VERSION, Config, register_configs

__all__ = ["SCHEMA_VERSION", "Config", "register_configs"]
