"""The daemon's one table of protocol methods: each name with its params model, its handler
and whether it changes state.

``METHODS`` is the only list of methods there is: the daemon validates a request's params
against the entry's model (``validate_params``), caches the replies of ``mutating`` entries by
request id (a retried request never acts twice), and calls the entry's handler. Adding a
method is adding one entry; docs/protocol.md describes each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from stedloop.server import queries
from stedloop.server.methods import (
    EventsSinceParams,
    FrameGetParams,
    NoParams,
    OverviewGetParams,
    Params,
    SessionGetParams,
    SessionsListParams,
    StartParams,
    StopParams,
    TokenParams,
)
from stedloop.wire.protocol import PROTOCOL_VERSION, ProtocolError

if TYPE_CHECKING:
    from stedloop.server.daemon import Daemon
    from stedloop.server.sessions import SessionHost

#: A handler gets the daemon, the validated params and the client's scope (``client_scope``).
Handler = Callable[["Daemon", Any, str], Any]

#: Params deeper or bigger than this are refused before validation: the config is a few
#: levels deep, and validating (or fingerprinting) deeper data would recurse past Python's
#: limit. Depth counts containers: ``{"overrides": {"params": {"x": {"max": 1}}}}`` is 4.
MAX_PARAMS_DEPTH = 16
MAX_PARAMS_VALUES = 10_000


@dataclass(frozen=True)
class Method:
    params: type[Params]
    handler: Handler
    #: Changes state: its replies are cached by request id, so a retried request (same id)
    #: gets the first reply again and never acts twice.
    mutating: bool = False


def _host(daemon: Daemon) -> SessionHost:
    assert daemon.host is not None, "requests are answered only once the daemon serves"
    return daemon.host


def _ping(daemon: Daemon, params: NoParams, scope: str) -> dict[str, Any]:
    return {"pong": True, "time_s": time.time(), "protocol": PROTOCOL_VERSION}


def _status(daemon: Daemon, params: NoParams, scope: str) -> dict[str, Any]:
    return daemon.status()


def _session_start(daemon: Daemon, params: StartParams, scope: str) -> Any:
    asked = params.resume
    if asked is None:
        return _host(daemon).start(params, client=scope)
    # The full id from here on: the daemon's own per-session files are named by it, so a
    # prefix (or '../x') must never reach a path.
    full_id = queries.resolve_session_id(daemon.store, asked)
    result = _host(daemon).start(params.model_copy(update={"resume": full_id}), client=scope)
    return {**result, "expanded_from": queries.expanded_from(asked, full_id)}


def _session_stop(daemon: Daemon, params: StopParams, scope: str) -> Any:
    return _host(daemon).stop(params.session_id, params.token, params.abort)


def _session_pause(daemon: Daemon, params: TokenParams, scope: str) -> Any:
    return _host(daemon).pause(params.session_id, params.token)


def _session_resume(daemon: Daemon, params: TokenParams, scope: str) -> Any:
    return _host(daemon).resume(params.session_id, params.token)


def _session_get(daemon: Daemon, params: SessionGetParams, scope: str) -> Any:
    return queries.session_get(daemon.store, _host(daemon), params)


def _sessions_list(daemon: Daemon, params: SessionsListParams, scope: str) -> Any:
    return queries.sessions_list(daemon.store, _host(daemon), params)


def _frame_get(daemon: Daemon, params: FrameGetParams, scope: str) -> Any:
    return queries.frame_get(daemon.store, params)


def _overview_get(daemon: Daemon, params: OverviewGetParams, scope: str) -> Any:
    return queries.overview_get(daemon.store, params)


def _events_since(daemon: Daemon, params: EventsSinceParams, scope: str) -> Any:
    return daemon.bus.since(params.seq, params.limit)


METHODS: dict[str, Method] = {
    "ping": Method(NoParams, _ping),
    "status": Method(NoParams, _status),
    "session.start": Method(StartParams, _session_start, mutating=True),
    "session.stop": Method(StopParams, _session_stop, mutating=True),
    "session.pause": Method(TokenParams, _session_pause, mutating=True),
    "session.resume": Method(TokenParams, _session_resume, mutating=True),
    "session.get": Method(SessionGetParams, _session_get),
    "sessions.list": Method(SessionsListParams, _sessions_list),
    "frame.get": Method(FrameGetParams, _frame_get),
    "overview.get": Method(OverviewGetParams, _overview_get),
    "events.since": Method(EventsSinceParams, _events_since),
}


def find_method(name: str, request_id: Any) -> Method:
    """The table's entry for ``name``, or ``unknown_method`` listing the methods there are."""
    method = METHODS.get(name)
    if method is None:
        raise ProtocolError(
            "unknown_method",
            f"unknown method {name!r}; methods are {', '.join(sorted(METHODS))}",
            request_id,
        )
    return method


def validate_params(name: str, params: dict[str, Any], request_id: Any) -> Params:
    """``params`` checked against the method's model; ``invalid_params`` naming each problem."""
    model = find_method(name, request_id).params
    _check_shape(name, params, request_id)
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "params"
            if error["type"] == "extra_forbidden":
                known = ", ".join(model.model_fields) or "none"
                problems.append(f"unknown param '{where}' (params of {name}: {known})")
            elif error["type"] == "missing":
                problems.append(f"missing param '{where}'")
            else:
                problems.append(f"param '{where}': {error['msg']}")
        raise ProtocolError(
            "invalid_params", f"{name}: " + "; ".join(problems), request_id
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
