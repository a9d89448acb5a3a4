"""Microscope backends (import name ``stedloop.drivers``) and the factory that builds one.

Backends are found through the entry-point group ``stedloop.drivers``; the simulator and the
Imspector driver are registered there exactly like a lab's own plugin would be.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ValidationError

from stedloop import registry
from stedloop.config.schema import StedloopConfig
from stedloop.driver import Driver, DriverDescription
from stedloop.errors import ConfigError


def driver_class(name: str) -> Any:
    """The class registered under ``name`` (version-checked; only that plugin is imported)."""
    return registry.load(registry.DRIVERS, name)  # validated there (Options, constructor)


def _non_finite_keys(value: Any, key: str) -> list[str]:
    if isinstance(value, float):
        return [] if math.isfinite(value) else [key]
    if isinstance(value, dict):
        return [k for sub, v in value.items() for k in _non_finite_keys(v, f"{key}.{sub}")]
    if isinstance(value, (list, tuple)):
        return [k for i, v in enumerate(value) for k in _non_finite_keys(v, f"{key}.{i}")]
    return []


def parse_driver_options(cls: Any, name: str, options: dict[str, Any]) -> BaseModel:
    # Every number must be finite, whatever a plugin's own model allows (1e999 reads as inf).
    bad = _non_finite_keys(options, f"drivers.{name}")
    if bad:
        raise ConfigError(f"invalid driver options: {', '.join(bad)} must be finite numbers")
    try:
        parsed: BaseModel = cls.Options.model_validate(options)
        return parsed
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(p) for p in error["loc"])
            if error["type"] == "extra_forbidden":
                known = ", ".join(sorted(cls.Options.model_fields))
                problems.append(f"unknown key 'drivers.{name}.{key}'; known keys: {known}")
            elif error["type"] == "missing":
                description = cls.Options.model_fields.get(str(error["loc"][-1]))
                hint = (
                    f" ({description.description})"
                    if description and description.description
                    else ""
                )
                problems.append(f"missing key 'drivers.{name}.{key}'{hint}")
            else:
                problems.append(
                    f"key 'drivers.{name}.{key}': {error['msg']} (got {error.get('input')!r})"
                )
        raise ConfigError("invalid driver options:\n  " + "\n  ".join(problems)) from None


def validate_driver_options(config: StedloopConfig) -> BaseModel:
    """Check the configured driver's ``[drivers.<name>]`` table; returns the parsed options."""
    cls = driver_class(config.driver.name)
    return parse_driver_options(cls, config.driver.name, config.driver_options())


def check_params_fit_driver(config: StedloopConfig, description: DriverDescription) -> None:
    """Refuse a parameter space the driver cannot set (each range named with the driver's),
    before a session is started rather than at its first frame."""
    problems = config.params.outside_ranges(description.parameter_ranges)
    if problems:
        raise ConfigError(
            f"the parameter space does not fit driver {description.name!r}: " + "; ".join(problems)
        )


def create_driver(config: StedloopConfig, **option_overrides: Any) -> Driver:
    """Build (not connect) the configured driver with its options and the safety caps."""
    name = config.driver.name
    cls = driver_class(name)
    options = parse_driver_options(cls, name, {**config.driver_options(), **option_overrides})
    driver: Driver = cls(options, config.safety)
    return driver
