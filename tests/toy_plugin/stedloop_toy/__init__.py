"""A driver package written against ``stedloop.plugin_api`` only (docs/plugins.md)."""

from stedloop_toy.driver import ToyDriver, ToyOptions

__all__ = ["ToyDriver", "ToyOptions"]
