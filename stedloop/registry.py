"""Plugin discovery through entry points, with an API-version check.

Groups: ``stedloop.drivers``, ``stedloop.objectives``, ``stedloop.scorers``. Only the plugin
asked for is imported, so a broken or heavy plugin that is not configured costs nothing.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from stedloop import PLUGIN_API_VERSION
from stedloop.errors import PluginError

DRIVERS = "stedloop.drivers"
OBJECTIVES = "stedloop.objectives"
SCORERS = "stedloop.scorers"
GROUPS = (DRIVERS, OBJECTIVES, SCORERS)


def _entry_points(group: str) -> dict[str, EntryPoint]:
    if group not in GROUPS:
        raise PluginError(f"unknown plugin group {group!r}; expected one of {', '.join(GROUPS)}")
    return {ep.name: ep for ep in entry_points(group=group)}


def available(group: str) -> list[str]:
    """Names registered in ``group`` (nothing is imported)."""
    return sorted(_entry_points(group))


def check_api_version(obj: Any, label: str) -> None:
    declared = getattr(obj, "API_VERSION", None)
    if declared is None:
        raise PluginError(
            f"{label} does not declare API_VERSION; set API_VERSION = {PLUGIN_API_VERSION!r} "
            "on the plugin class"
        )
    if str(declared).split(".")[0] != PLUGIN_API_VERSION.split(".")[0]:
        raise PluginError(
            f"{label} was written for plugin API {declared}, but this stedloop provides "
            f"{PLUGIN_API_VERSION}; update the plugin or install a matching stedloop"
        )


def load(group: str, name: str) -> Any:
    """Import and return the object registered as ``name`` in ``group``, version-checked."""
    registered = _entry_points(group)
    if name not in registered:
        known = ", ".join(sorted(registered)) or "none"
        raise PluginError(f"no {group} plugin named {name!r}; installed: {known}")
    label = f"{group} plugin {name!r} ({registered[name].value})"
    try:
        obj = registered[name].load()
    except Exception as exc:  # any import failure is reported, with its cause
        raise PluginError(f"cannot import {label}: {type(exc).__name__}: {exc}") from exc
    check_api_version(obj, label)
    return obj
