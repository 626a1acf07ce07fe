"""Typed, validated command configs composed with Hydra from ``configs/COMMAND.yaml``."""

from gensis.config.compose import compose_config, config_dir, describe_schema, to_yaml

__all__ = ["compose_config", "config_dir", "describe_schema", "to_yaml"]
