"""The daemon's wire protocol: versioned JSON requests and replies (see docs/protocol.md).

A request is one JSON object ``{"v": 1, "id": ..., "method": ..., "params": {...}}``, plus an
optional ``client_id`` (the client's secret, which scopes its request ids); the reply is
``{"id": ..., "ok": true, "result": ...}`` or
``{"id": ..., "ok": false, "error": {"code": ..., "message": ...}}``. Everything that can go
wrong with a message becomes a ``ProtocolError`` carrying one of ``ERROR_CODES``; the server
turns it into an error reply and keeps serving.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

PROTOCOL_VERSION = 1

#: Every error code a reply can carry, with what it means (docs/protocol.md lists the same).
ERROR_CODES: dict[str, str] = {
    "bad_json": "the message is not a UTF-8 JSON object",
    "bad_request": "the envelope is wrong: missing/extra keys, wrong types",
    "unsupported_version": "the request's protocol version 'v' is not served here",
    "too_large": "the message exceeds the daemon's size cap",
    "unknown_method": "no such method",
    "invalid_params": "the method's params are missing, of the wrong type, or invalid",
    "param_rejected": "imaging parameters or ranges beyond the safety caps",
    "forbidden": "the request may not do this (wrong token, protected setting)",
    "conflict": "the request clashes with the daemon's state (a session already runs...)",
    "not_found": "the session or frame does not exist",
    "busy": "not ready yet (e.g. the quality model is loading); retry shortly",
    "unavailable": "a needed component failed (e.g. the quality model could not be loaded)",
    "storage": "session data cannot be read or written (a damaged ledger, a full disk)",
    "internal": "an unexpected error in the daemon (logged); the daemon keeps serving",
}

#: Request ids: strings up to this length, or integers (JSON numbers without fraction).
MAX_ID_CHARS = 128
#: A client_id is a secret: at least this long (``secrets.token_urlsafe(16)`` is 22 chars).
MIN_CLIENT_ID_CHARS = 16


class ProtocolError(Exception):
    """A request that gets an error reply; ``code`` is one of ``ERROR_CODES``."""

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class Request(BaseModel):
    """The request envelope. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: StrictInt = Field(description="Protocol version; this daemon serves 1.")
    id: StrictStr | StrictInt = Field(description="Chosen by the client; unique per request.")
    client_id: StrictStr | None = Field(
        None,
        min_length=MIN_CLIENT_ID_CHARS,
        max_length=MAX_ID_CHARS,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="A random secret the client keeps for its lifetime: request ids and "
        "idempotency keys are scoped to it (see docs/protocol.md).",
    )
    method: StrictStr = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's json accepts them unless told not to.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # A literal such as 1e999 parses to infinity: no setting or parameter may be infinite.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range (not finite)")
    return value


def decode_request(payload: bytes, max_bytes: int) -> Request:
    """Parse and check one request message; raise ``ProtocolError`` naming the problem."""
    if len(payload) > max_bytes:
        raise ProtocolError(
            "too_large", f"message of {len(payload)} bytes exceeds the cap of {max_bytes} bytes"
        )
    try:
        data = json.loads(
            payload.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except UnicodeDecodeError:
        raise ProtocolError("bad_json", "message is not UTF-8 text") from None
    except RecursionError:
        raise ProtocolError("bad_json", "message is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN, over-long integer literals
        raise ProtocolError("bad_json", f"message is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_json", f"message must be a JSON object, got {type(data).__name__}")
    request_id = _usable_id(data.get("id"))
    try:
        request = Request.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError("bad_request", _explain(exc), request_id) from None
    if isinstance(request.id, str) and not 1 <= len(request.id) <= MAX_ID_CHARS:
        raise ProtocolError("bad_request", f"id must be 1..{MAX_ID_CHARS} characters", None)
    if request.v != PROTOCOL_VERSION:
        raise ProtocolError(
            "unsupported_version",
            f"protocol version {request.v} is not served; this daemon speaks v={PROTOCOL_VERSION}",
            request.id,
        )
    return request


def _usable_id(value: Any) -> Any:
    """The id to echo in an error reply, when the broken request still had a sane one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS):
        return value
    return None


def _explain(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "message"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown key '{where}'")
        elif error["type"] == "missing":
            problems.append(f"missing key '{where}'")
        else:
            problems.append(f"'{where}': {error['msg']}")
    return "; ".join(problems)


def ok_reply(request_id: Any, result: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def error_reply(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def encode(message: dict[str, Any]) -> bytes:
    """Replies and events: compact UTF-8 JSON; NaN/inf become null, other objects strings."""
    try:
        text = json.dumps(message, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:  # a non-finite float somewhere (e.g. a failed objective)
        text = json.dumps(_finite(message), separators=(",", ":"), default=str, allow_nan=False)
    return text.encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """ROUTER frames after the identity -> (routing envelope, payload frames).

    A REQ socket sends ``[b"", payload]``; a DEALER may send ``[payload]`` or mimic REQ.
    Everything up to and including the first empty frame is envelope, echoed in the reply.
    """
    for index, frame in enumerate(frames):
        if frame == b"":
            return frames[: index + 1], frames[index + 1 :]
    return [], frames
