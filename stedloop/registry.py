"""Plugin discovery through entry points, and the one place a plugin is validated.

Groups: ``stedloop.drivers``, ``stedloop.objectives``, ``stedloop.scorers``. Only the plugin
asked for is imported, so a broken or heavy plugin that is not configured costs nothing.
``load`` checks what can be checked before a plugin is used (``validate``: API version,
required methods, a driver's ``Options`` and constructor); ``check_objective`` checks a
built objective's attributes. The contract itself is in docs/plugins.md.
"""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from stedloop import PLUGIN_API_VERSION
from stedloop.errors import PluginError

DRIVERS = "stedloop.drivers"
OBJECTIVES = "stedloop.objectives"
SCORERS = "stedloop.scorers"
GROUPS = (DRIVERS, OBJECTIVES, SCORERS)

#: What a plugin of each group must provide (checked at load, before it is used).
REQUIRED_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    DRIVERS: ("connect", "describe", "acquire", "request_abort", "safe_state", "close"),
    OBJECTIVES: ("evaluate",),
    SCORERS: ("from_config", "score"),
}


def _check_group(group: str) -> str:
    if group not in GROUPS:
        raise PluginError(f"unknown plugin group {group!r}; expected one of {', '.join(GROUPS)}")
    return group


def _entry_points(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=_check_group(group)):
        # The same distribution can be visible twice (e.g. an editable install plus a
        # build folder); only a different target for the same name is a real clash.
        if ep.name in found and found[ep.name].value != ep.value:
            found[ep.name] = _Clash(ep.name, ep.value, found[ep.name].value)  # type: ignore[assignment]
            continue
        found.setdefault(ep.name, ep)
    return found


class _Clash:
    """Marks a name registered twice with different targets; fails only if it is loaded."""

    def __init__(self, name: str, first: str, second: str) -> None:
        self.name = name
        self.value = f"{first} | {second}"

    def load(self) -> Any:
        raise PluginError(
            f"plugin name {self.name!r} is registered twice ({self.value}); "
            "uninstall one of the packages or rename its entry point"
        )


def available(group: str) -> list[str]:
    """Names registered in ``group`` (nothing is imported)."""
    return sorted(_entry_points(group))


def _parse_version(text: str) -> tuple[int, int] | None:
    parts = text.strip().split(".")
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]) if len(parts) == 2 else 0


def check_api_version(obj: Any, label: str) -> None:
    """Refuse a plugin written for another plugin API, naming both versions.

    Same major number required; a plugin may not need a newer minor version than this
    stedloop provides (minor versions only add to the API)."""
    declared = getattr(obj, "API_VERSION", None)
    if declared is None:
        raise PluginError(
            f"{label} does not declare API_VERSION; set API_VERSION = {PLUGIN_API_VERSION!r} "
            "on the plugin class"
        )
    wanted = _parse_version(str(declared))
    provided = _parse_version(PLUGIN_API_VERSION)
    assert provided is not None
    if wanted is None:
        raise PluginError(
            f"{label} declares API_VERSION = {declared!r}, which is not 'MAJOR.MINOR'; "
            f"use {PLUGIN_API_VERSION!r}"
        )
    if wanted[0] != provided[0] or wanted[1] > provided[1]:
        raise PluginError(
            f"{label} was written for plugin API {declared}, but this stedloop provides "
            f"{PLUGIN_API_VERSION}; update the plugin or install a matching stedloop"
        )


def unimplemented_methods(obj: Any, required: tuple[str, ...]) -> list[str]:
    """Methods a plugin class inherits as abstract and does not implement.

    An ABC subclass (``BaseDriver``, ``BaseObjective``) that misses one cannot even be built;
    a required method that is still a placeholder marked ``@abstractmethod`` in a plain base
    class (``SafeStateContext``) would fail at its first call. Both are caught at load."""
    missing = set(getattr(obj, "__abstractmethods__", ())) if inspect.isabstract(obj) else set()
    for name in required:
        if getattr(getattr(obj, name, None), "__isabstractmethod__", False):
            missing.add(name)
    return sorted(missing)


def describe(group: str) -> list[dict[str, str]]:
    """Name, target and distribution of each registered plugin, without importing any."""
    rows = []
    for ep in entry_points(group=_check_group(group)):
        dist = getattr(ep, "dist", None)
        rows.append(
            {
                "name": ep.name,
                "value": ep.value,
                "distribution": f"{dist.name} {dist.version}" if dist is not None else "?",
            }
        )
    return sorted(rows, key=lambda row: row["name"])


def validate(group: str, obj: Any, label: str) -> None:
    """Refuse a plugin that breaks its group's contract, with one line naming what to fix."""
    check_api_version(obj, label)
    missing = [a for a in REQUIRED_ATTRIBUTES[group] if not callable(getattr(obj, a, None))]
    if missing:
        raise PluginError(f"{label} lacks {', '.join(missing)}, which {group} plugins must provide")
    abstract = unimplemented_methods(obj, REQUIRED_ATTRIBUTES[group])
    if abstract:
        raise PluginError(
            f"{label} does not implement {', '.join(abstract)}, which its base class leaves "
            "abstract; define them in the plugin class"
        )
    if group == DRIVERS:
        _validate_driver_class(obj, label)


def _validate_driver_class(cls: Any, label: str) -> None:
    from pydantic import BaseModel

    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise PluginError(
            f"{label} has no Options model; set Options = <pydantic model> "
            "(stedloop.plugin_api.NoOptions if it takes none)"
        )
    try:  # stedloop builds every driver as cls(options, caps)
        inspect.signature(cls).bind(object(), object())
    except TypeError:
        raise PluginError(
            f"{label} cannot be built as {getattr(cls, '__name__', 'cls')}(options, caps); "
            "its __init__ must take the options model and the SafetyCaps as its two "
            "positional arguments"
        ) from None
    except ValueError:  # no signature to inspect (a C type): built and seen at first use
        pass


def check_objective(objective: Any, label: str) -> None:
    """A built objective has a name, a unit, a direction and ``evaluate``."""
    for attribute in ("name", "unit", "direction", "evaluate"):
        if not hasattr(objective, attribute):
            raise PluginError(f"{label} has no {attribute!r}")
    if objective.direction not in ("maximize", "minimize"):
        raise PluginError(
            f"{label} has direction {objective.direction!r}; expected 'maximize' or 'minimize'"
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
    except PluginError:
        raise
    except Exception as exc:  # any import failure is reported, with its cause
        raise PluginError(f"cannot import {label}: {type(exc).__name__}: {exc}") from exc
    validate(group, obj, label)
    return obj
