"""Configuration: schema (``schema``) and layered loading with provenance (``loader``)."""

from stedloop.config.loader import LoadedConfig, load_config, with_overrides
from stedloop.config.schema import StedloopConfig

__all__ = ["LoadedConfig", "StedloopConfig", "load_config", "with_overrides"]
