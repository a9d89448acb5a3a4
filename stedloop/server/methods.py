"""The params of every protocol method, as strict pydantic models (unknown keys refused).

``METHODS`` maps each method name to its params model; the server validates ``params``
against it before any handler runs, so handlers see typed, checked values only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stedloop.config.schema import SESSION_SECTIONS
from stedloop.wire.protocol import ProtocolError

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


class EventsSinceParams(Params):
    seq: int = Field(0, ge=0, description="Return events with a sequence number above this.")
    limit: int = Field(1000, ge=1, le=10_000)


METHODS: dict[str, type[Params]] = {
    "ping": NoParams,
    "status": NoParams,
    "session.start": StartParams,
    "session.stop": StopParams,
    "session.pause": TokenParams,
    "session.resume": TokenParams,
    "session.get": SessionGetParams,
    "sessions.list": SessionsListParams,
    "frame.get": FrameGetParams,
    "events.since": EventsSinceParams,
}

#: Params deeper or bigger than this are refused before validation: the config is a few
#: levels deep, and validating (or fingerprinting) deeper data would recurse past Python's
#: limit. Depth counts containers: ``{"overrides": {"params": {"x": {"max": 1}}}}`` is 4.
MAX_PARAMS_DEPTH = 16
MAX_PARAMS_VALUES = 10_000

#: Methods that change state: their replies are cached by request id, so a retried request
#: (same id) gets the first reply again and never acts twice.
MUTATING = frozenset({"session.start", "session.stop", "session.pause", "session.resume"})


def validate_params(method: str, params: dict[str, Any], request_id: Any) -> Params:
    model = METHODS.get(method)
    if model is None:
        raise ProtocolError(
            "unknown_method",
            f"unknown method {method!r}; methods are {', '.join(sorted(METHODS))}",
            request_id,
        )
    _check_shape(method, params, request_id)
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "params"
            if error["type"] == "extra_forbidden":
                known = ", ".join(model.model_fields) or "none"
                problems.append(f"unknown param '{where}' (params of {method}: {known})")
            elif error["type"] == "missing":
                problems.append(f"missing param '{where}'")
            else:
                problems.append(f"param '{where}': {error['msg']}")
        raise ProtocolError(
            "invalid_params", f"{method}: " + "; ".join(problems), request_id
        ) from None


def _check_shape(method: str, params: dict[str, Any], request_id: Any) -> None:
    """Refuse params nested deeper than ``MAX_PARAMS_DEPTH`` or holding more than
    ``MAX_PARAMS_VALUES`` values, naming the top-level param. Iterative: it must not
    recurse itself."""
    values = 0
    for name, value in params.items():
        stack: list[tuple[Any, int]] = [(value, 2)]
        while stack:
            item, depth = stack.pop()
            values += 1
            if values > MAX_PARAMS_VALUES:
                raise ProtocolError(
                    "invalid_params",
                    f"{method}: params hold more than {MAX_PARAMS_VALUES} values",
                    request_id,
                )
            if not isinstance(item, (dict, list)):
                continue
            if depth > MAX_PARAMS_DEPTH:
                raise ProtocolError(
                    "invalid_params",
                    f"{method}: param '{name}' is nested more than {MAX_PARAMS_DEPTH} levels "
                    "deep; config overrides are a few levels, like the TOML",
                    request_id,
                )
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
