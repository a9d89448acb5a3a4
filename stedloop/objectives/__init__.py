"""Objectives: what a frame is judged by (quality, resolution, signal ratio, bleaching...)."""

from __future__ import annotations

from typing import Any

from stedloop import registry
from stedloop.config.schema import StedloopConfig
from stedloop.errors import PluginError
from stedloop.objectives.base import Objective


def build_objective(name: str, config: StedloopConfig, scorer: Any = None) -> Objective:
    """Load the plugin ``name`` (group ``stedloop.objectives``) and build it."""
    cls = registry.load(registry.OBJECTIVES, name)
    factory = getattr(cls, "from_config", None)
    objective = factory(config, scorer=scorer) if factory is not None else cls()
    for attribute in ("name", "unit", "direction", "evaluate"):
        if not hasattr(objective, attribute):
            raise PluginError(f"objective plugin {name!r} has no {attribute!r}")
    if objective.direction not in ("maximize", "minimize"):
        raise PluginError(
            f"objective plugin {name!r} has direction {objective.direction!r}; "
            "expected 'maximize' or 'minimize'"
        )
    return objective


def build_objectives(config: StedloopConfig, scorer: Any = None) -> list[Objective]:
    """The configured objectives, in ``objectives.names`` order. The quality objective uses
    ``scorer`` when given (the daemon's, loaded once), else it loads the configured network."""
    names = list(config.objectives.names)
    if len(set(names)) != len(names):
        raise PluginError(f"objectives.names lists an objective twice: {names}")
    return [build_objective(name, config, scorer) for name in names]


__all__ = ["Objective", "build_objective", "build_objectives"]
