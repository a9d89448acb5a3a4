"""The settings a resumed session runs with: the site's configuration in force now.

A session's ledger records the settings it was created with. A resume takes from that record
only the session's own sections (``SESSION_SECTIONS``: parameter space, objectives, optimizer,
budget), as overrides validated against today's site configuration exactly like a daemon
client's. Safety caps, driver, worker, interpreter, paths, ports and keys always come from the
site configuration: a ledger, edited or old, never chooses code to run or a laser limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stedloop.config.loader import LoadedConfig, with_overrides
from stedloop.config.schema import SESSION_SECTIONS
from stedloop.errors import ConfigError, SafetyCapExceeded
from stedloop.params import ParamSpace


def recorded_session_sections(recorded_config: Mapping[str, Any]) -> dict[str, Any]:
    """The session-level tables of a ledger's config snapshot; every other table is dropped."""
    return {
        name: dict(recorded_config[name])
        for name in SESSION_SECTIONS
        if isinstance(recorded_config.get(name), Mapping)
    }


def recorded_space_beyond_caps(
    recorded_space: Mapping[str, Any] | None, site: LoadedConfig
) -> str | None:
    """Why a session's recorded parameter space does not fit inside today's safety caps, naming
    both values and where the cap is set; None when it fits (or nothing usable was recorded)."""
    if not isinstance(recorded_space, Mapping):
        return None
    try:
        space = ParamSpace.model_validate(dict(recorded_space))
    except ValueError as exc:  # an edited or damaged record: it cannot be trusted either way
        return f"the recorded parameter space is invalid: {exc}"
    try:
        space.check_within_caps(site.config.safety)
    except SafetyCapExceeded as exc:
        origins = sorted({site.source_of(k) for k in _cap_keys(site)})
        return f"recorded {exc} (caps from {', '.join(origins)})"
    return None


def resume_settings(
    site: LoadedConfig,
    recorded_config: Mapping[str, Any],
    session_id: str,
    cli_overrides: Mapping[str, Any] | None = None,
    force: bool = False,
) -> tuple[LoadedConfig, list[str]]:
    """Today's site settings plus the session's recorded session sections, then the command
    line's overrides; and notes to show the user.

    A recorded parameter space beyond today's caps is refused naming both values; with
    ``force`` the session continues inside the site's own parameter space, said in a note."""
    overrides = recorded_session_sections(recorded_config)
    notes: list[str] = []
    problem = recorded_space_beyond_caps(overrides.get("params"), site)
    if problem is not None:
        if not force:
            raise ConfigError(
                f"session {session_id} cannot resume under today's safety caps: {problem}; "
                "resume with --force to continue inside the site's parameter space"
            )
        overrides.pop("params", None)
        notes.append(f"{problem}; continuing inside the site's parameter space (--force)")
    label = f"session {session_id}"
    loaded = with_overrides(site, overrides, label=label) if overrides else site
    if cli_overrides:
        loaded = with_overrides(loaded, cli_overrides)
    return loaded, notes


def _cap_keys(site: LoadedConfig) -> list[str]:
    return [f"safety.{name}" for name in type(site.config.safety).model_fields]
