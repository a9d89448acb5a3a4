"""The params of every protocol method, as strict pydantic models (unknown keys refused).

The table in ``stedloop.server.handlers`` names each method's model; the daemon validates
``params`` against it before any handler runs, so handlers see typed, checked values only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stedloop.config.schema import SESSION_SECTIONS

#: Config sections a client may override per session; the rest is the site's.
OVERRIDABLE_SECTIONS = SESSION_SECTIONS


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class NoParams(Params):
    pass


class StartParams(Params):
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Config overrides, nested like the TOML (only params, objectives, "
        "optimizer, session).",
    )
    budget_frames: int | None = Field(None, ge=1, le=100_000)
    objectives: list[str] | None = Field(None, min_length=1, max_length=16)
    name: str | None = Field(None, max_length=200)
    idempotency_key: str | None = Field(None, min_length=1, max_length=128)
    resume: str | None = Field(
        None, min_length=1, max_length=128, description="Id of an interrupted session."
    )
    force: bool = Field(False, description="Resume even if the space/objectives changed.")
    warm_start: list[str] | None = Field(
        None,
        min_length=1,
        max_length=32,
        description="Earlier session ids to warm-start a new session from, or ['auto'].",
    )


class TokenParams(Params):
    session_id: str = Field(min_length=1, max_length=128)
    token: str = Field(min_length=1, max_length=256)


class StopParams(TokenParams):
    abort: bool = Field(False, description="Interrupt the frame in flight instead of finishing it.")


class SessionGetParams(Params):
    session_id: str = Field(min_length=1, max_length=128)
    first_frame: int = Field(0, ge=0, description="Include frame records from this number on.")


class SessionsListParams(Params):
    limit: int = Field(50, ge=1, le=10_000)


class FrameGetParams(Params):
    session_id: str = Field(min_length=1, max_length=128)
    frame: int = Field(ge=0, description="Frame number as in frame events.")
    image: Literal["confocal_before", "sted", "confocal_after"] = "sted"
    mode: Literal["thumbnail", "full"] = "thumbnail"
    max_px: int = Field(128, ge=8, le=1024, description="Thumbnail's longest side.")


class OverviewGetParams(Params):
    session_id: str = Field(min_length=1, max_length=128)
    overview: int = Field(ge=0, description="Overview number as in session.get's overviews.")
    mode: Literal["thumbnail", "full"] = "full"
    max_px: int = Field(128, ge=8, le=1024, description="Thumbnail's longest side.")


class EventsSinceParams(Params):
    seq: int = Field(0, ge=0, description="Return events with a sequence number above this.")
    limit: int = Field(1000, ge=1, le=10_000)
