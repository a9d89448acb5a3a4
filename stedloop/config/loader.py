"""Load settings in layers and remember where every value came from.

Layers, later ones winning, merged deeply (tables merge, values replace):
1. the schema's defaults;
2. ``configs/default.toml`` shipped with stedloop;
3. a site file: ``--config PATH`` or ``$STEDLOOP_CONFIG``;
4. ``STEDLOOP_*`` environment variables, nested with ``__``
   (``STEDLOOP_SESSION__BUDGET_FRAMES=50``), parsed by pydantic-settings;
5. explicit overrides (command-line options, a daemon request).
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from stedloop.config.schema import StedloopConfig
from stedloop.errors import ConfigError, StedloopError
from stedloop.params import PARAM_UNITS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "STEDLOOP_"
#: Environment variables with the prefix that are not settings (the last four are the
#: test suite's switches, inherited by the daemons and commands the tests start).
RESERVED_ENV = {
    "STEDLOOP_CONFIG",
    "STEDLOOP_DEBUG",
    "STEDLOOP_HOME",
    "STEDLOOP_LOG_FORMAT",
    "STEDLOOP_REQUIRE_BROWSER",
    "STEDLOOP_REQUIRE_RAY",
    "STEDLOOP_CHROMIUM",
    "STEDLOOP_SCREENSHOTS",
}
DEFAULTS_LABEL = "default"


class _EnvShape(BaseSettings, StedloopConfig):
    """Only used to let pydantic-settings parse the environment into nested tables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )


@dataclass
class LoadedConfig:
    """The validated settings plus, for every dotted key, the layer that set it."""

    config: StedloopConfig
    sources: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def source_of(self, key: str) -> str:
        return _lookup_source(self.sources, key)

    def effective_items(self) -> list[tuple[str, Any, str]]:
        """(dotted key, value, source) for every leaf of the effective settings."""
        flat = flatten(self.config.model_dump(mode="json"))
        return [(key, value, self.source_of(key)) for key, value in sorted(flat.items())]


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables to dotted keys; non-empty tables recurse, anything else is a leaf."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _lookup_source(sources: Mapping[str, str], key: str) -> str:
    # The most specific layer that set this key or one of its parent tables.
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        label = sources.get(".".join(parts[:end]))
        if label:
            return label
    # A whole table (an unknown `[section]`): only its leaves are recorded, so name the
    # layers that set them.
    inside = list(dict.fromkeys(v for k, v in sources.items() if k.startswith(key + ".")))
    return ", ".join(inside) if inside else DEFAULTS_LABEL


def read_toml(path: Path, what: str = "config file") -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            table: dict[str, Any] = tomllib.load(handle)
            return table
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder, not a TOML file") from None
    except PermissionError:
        raise ConfigError(f"{what} {path} cannot be read (permission denied)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None


def shipped_default_path() -> Path:
    return Path(str(resources.files("stedloop.configs").joinpath("default.toml")))


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    known = {f"{ENV_PREFIX}{name.upper()}" for name in StedloopConfig.model_fields}
    for variable in environ:
        if not variable.startswith(ENV_PREFIX) or variable in RESERVED_ENV:
            continue
        head = variable.split("__", 1)[0]
        if head not in known:
            hint = _did_you_mean(head, sorted(known))
            raise ConfigError(
                f"environment variable {variable} does not name a setting{hint}; "
                f"settings are {ENV_PREFIX}<SECTION>__<KEY>, e.g. {ENV_PREFIX}SESSION__BUDGET_FRAMES"
            )
    source = EnvSettingsSource(
        _EnvShape,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
    )
    source.env_vars = {k.lower(): v for k, v in environ.items()}
    try:
        return dict(source())
    except Exception as exc:  # pydantic-settings raises SettingsError on undecodable JSON
        raise ConfigError(f"environment settings cannot be parsed: {exc}") from None


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at ``loc`` (a pydantic error location), for suggestions."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            break
        annotation = fields[part].annotation
        current = annotation
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def _describe_field(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    current: Any = model
    info = None
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return ""
        info = fields[part]
        current = info.annotation
    return (info.description or "") if info else ""


def explain_validation_error(exc: ValidationError, sources: Mapping[str, str]) -> str:
    lines = []
    for error in exc.errors():
        loc = tuple(str(p) for p in error["loc"])
        key = ".".join(loc)
        where = _lookup_source(sources, key)
        if error["type"] == "extra_forbidden":
            parent = loc[:-1]
            allowed = _allowed_keys(StedloopConfig, parent)
            hint = _did_you_mean(loc[-1], allowed)
            expected = f"known keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"unknown key '{key}' (from {where}){hint}; {expected}".rstrip("; "))
            continue
        description = _describe_field(StedloopConfig, loc)
        if len(loc) >= 2 and loc[0] == "params" and loc[1] in PARAM_UNITS:
            description = f"{description} A number in {PARAM_UNITS[loc[1]]}.".strip()
        expected = f"; expected: {description}" if description else ""
        got = error.get("input")
        lines.append(f"key '{key}' (from {where}): {error['msg']} (got {got!r}){expected}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_config(
    config_path: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    use_shipped_defaults: bool = True,
) -> LoadedConfig:
    """Build the effective settings; raise ``ConfigError`` naming key, source and form."""
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, dict[str, Any]]] = []
    files: list[Path] = []
    if use_shipped_defaults:
        default_path = shipped_default_path()
        layers.append((f"file {default_path}", read_toml(default_path)))
        files.append(default_path)
    site = config_path if config_path is not None else environ.get("STEDLOOP_CONFIG")
    if site:
        site_path = Path(site).expanduser()
        via = "" if config_path is not None else " ($STEDLOOP_CONFIG)"
        layers.append((f"file {site_path}{via}", read_toml(site_path)))
        files.append(site_path)
    layers.append(("environment", _env_layer(environ)))
    if overrides:
        layers.append(("override", dict(overrides)))

    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for label, table in layers:
        merged = deep_merge(merged, table)
        for key in flatten(table):
            sources[key] = label
    try:
        config = StedloopConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(explain_validation_error(exc, sources)) from None
    except StedloopError as exc:  # cross-field checks such as ranges beyond safety caps
        keys = [k for k in sources if k.startswith(("params.", "safety.", "session.overview."))]
        origin = ", ".join(sorted({sources[k] for k in keys})) or DEFAULTS_LABEL
        raise ConfigError(f"invalid configuration (from {origin}): {exc}") from None
    return LoadedConfig(config=config, sources=sources, files=files)


def with_overrides(
    loaded: LoadedConfig, overrides: Mapping[str, Any], label: str = "override"
) -> LoadedConfig:
    """Apply overrides on top of already-loaded settings (e.g. a daemon request); ``label``
    names where they came from in error messages and ``config show``."""
    base = loaded.config.model_dump(mode="python")
    sources = dict(loaded.sources)
    for key in flatten(overrides):
        sources[key] = label
    try:
        config = StedloopConfig.model_validate(deep_merge(base, overrides))
    except ValidationError as exc:
        raise ConfigError(explain_validation_error(exc, sources)) from None
    except StedloopError as exc:
        raise ConfigError(f"invalid configuration (from {label}): {exc}") from None
    return LoadedConfig(config=config, sources=sources, files=list(loaded.files))
