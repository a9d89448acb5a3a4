"""Objectives: what a frame is judged by (quality, resolution, signal ratio, bleaching...)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from stedloop import registry
from stedloop.config.schema import StedloopConfig
from stedloop.errors import PluginError
from stedloop.objectives.base import Objective
from stedloop.quality.scorer_protocol import Scorer


def build_objective(name: str, config: StedloopConfig, scorer: Scorer | None = None) -> Objective:
    """Load the plugin ``name`` (group ``stedloop.objectives``) and build it."""
    cls = registry.load(registry.OBJECTIVES, name)
    factory = getattr(cls, "from_config", None)
    objective: Objective  # checked below: a plugin is loaded by name, untyped
    if factory is None:
        objective = cls()
    elif _accepts_scorer(factory):
        objective = factory(config, scorer=scorer)
    else:  # a plugin that needs no scorer may take the config alone
        objective = factory(config)
    registry.check_objective(objective, f"objective plugin {name!r}")
    return objective


def _accepts_scorer(function: Callable[..., object]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "scorer" or p.kind is p.VAR_KEYWORD for p in parameters)


def build_objectives(config: StedloopConfig, scorer: Scorer | None = None) -> list[Objective]:
    """The configured objectives, in ``objectives.names`` order. The quality objective uses
    ``scorer`` when given (the daemon's, loaded once), else it loads the configured network."""
    names = list(config.objectives.names)
    if len(set(names)) != len(names):
        raise PluginError(f"objectives.names lists an objective twice: {names}")
    return [build_objective(name, config, scorer) for name in names]


__all__ = ["Objective", "build_objective", "build_objectives"]
