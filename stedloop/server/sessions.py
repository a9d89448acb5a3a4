"""The daemon's session slot: at most one optimisation session, run by the session engine.

The request loop calls ``start``/``stop``/``pause``/``resume``/``snapshot`` and never waits
for an acquisition: the session runs in the engine process (engine.py), which sends its
events here (``on_engine_message``, from the link's reader thread); they update what
``status`` shows and go to the ``EventBus``. Requests go to the engine's ``SessionControl``;
a mirror of it here gives replies their state at once. Only the holder of a session's token
may control it.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stedloop import events as ev
from stedloop.config import LoadedConfig, with_overrides
from stedloop.errors import (
    ConfigError,
    DataError,
    SafetyCapExceeded,
    StedloopError,
)
from stedloop.logs import get_logger
from stedloop.params import ParamSpace
from stedloop.server.events import EventBus
from stedloop.server.methods import OVERRIDABLE_SECTIONS, StartParams
from stedloop.session.control import SessionControl
from stedloop.wire.protocol import ProtocolError

if TYPE_CHECKING:
    from stedloop.server.engine_link import EngineLink
    from stedloop.store.session_store import SessionStore

log = get_logger(__name__)

#: How long session.start waits for a just-ended session's cleanup (driver safe, ledger
#: closed) in the engine.
CLEANUP_WAIT_S = 2.0
TERMINAL_STATES = ("finished", "stopped", "failed")


@dataclass
class LiveSession:
    """What the daemon knows about the session it runs; read under the host's lock."""

    id: str
    token: str
    control: SessionControl
    budget_frames: int
    objectives: list[str]
    resumed: bool
    started_at_s: float = field(default_factory=time.time)
    #: Set when the engine reports the run over and cleaned up (``finished``).
    done: threading.Event = field(default_factory=threading.Event)
    #: Bus events of this run have a seq above this (``follow(since_seq=...)`` shows the run
    #: from its start, not an earlier run of the same session).
    since_seq: int = 0
    #: The session's own count and best point (a resumed one's include earlier runs).
    progress: ev.Progress = field(default_factory=ev.Progress)
    last_frame: ev.FrameOutcome | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    end_state: str | None = None  # set by the run's final session event (cleanup may remain)
    finished: bool = False  # the engine's session thread is done

    @property
    def ended(self) -> bool:
        return self.end_state is not None or self.error is not None or self.finished

    def state(self) -> str:
        if self.error is not None:
            return "failed"
        if self.end_state is not None:
            return self.end_state
        if self.finished:
            return str((self.summary or {}).get("state") or "finished")
        return str(self.control.state)


class SessionHost:
    def __init__(
        self,
        loaded: LoadedConfig,
        engine: EngineLink | None,
        store: SessionStore,
        bus: EventBus,
    ) -> None:
        self._loaded = loaded
        #: The session engine; None while it is being replaced (``engine_lost``).
        self.engine = engine
        self._engine_error: str | None = None  # why there is no engine, if it failed
        self._store = store
        self._bus = bus
        self._lock = threading.Lock()
        #: (objectives, resumed, since_seq) of the open in progress, for its ``opened``.
        self._opening: tuple[list[str], bool, int] | None = None
        self._current: LiveSession | None = None
        self._tokens: dict[str, str] = {}
        #: (client scope, idempotency key) -> (request fingerprint, the start's result)
        self._idempotency: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self.interrupted: list[str] = []

    # -- start-up -------------------------------------------------------------------------
    def find_interrupted(self) -> list[str]:
        from stedloop.session.runner import interrupted_sessions

        self.interrupted = [info.id for info in interrupted_sessions(self._store)]
        return self.interrupted

    # -- session.start --------------------------------------------------------------------
    def start(self, params: StartParams, *, client: str) -> dict[str, Any]:
        """``client``: the requester's scope (``replies.client_scope``); an idempotency key is
        looked up within it only, so no client is ever handed another's result and token."""
        key = None if params.idempotency_key is None else (client, params.idempotency_key)
        request_print = params.model_dump_json(exclude={"idempotency_key"})
        if key is not None and key in self._idempotency:
            seen_print, result = self._idempotency[key]
            if seen_print != request_print:
                raise ProtocolError(
                    "conflict",
                    f"idempotency_key {key[1]!r} was used for a different request",
                )
            return result
        with self._lock:
            current = self._current
        since_seq = self._bus.last_seq  # this run's events (resume notes first) come after
        if current is not None and not current.finished:
            if current.ended or current.control.state == "finished":
                # The run has ended (its last event is out); only cleanup is left: wait for it
                # so two sessions never touch the driver at once.
                current.done.wait(CLEANUP_WAIT_S)
            if not current.finished:
                raise ProtocolError(
                    "conflict",
                    f"session {current.id} is {current.state()}; the daemon runs one session "
                    "at a time (stop it first)",
                )
        overrides = self._overrides_for(params)
        if params.resume is not None and params.warm_start:
            raise ProtocolError(
                "invalid_params",
                "warm_start cannot be combined with resume: a session keeps its own warm start",
            )
        if params.resume is not None:
            loaded = self._resume_config(params.resume, overrides, params.force)
        else:
            loaded = self._apply_overrides(overrides)
        objectives = list(loaded.config.objectives.names)
        opened = self._open_session(params, loaded, objectives, since_seq)
        with self._lock:
            live = self._current
        assert live is not None and live.id == opened["session_id"]
        result = {
            "session_id": live.id,
            "token": live.token,
            "resumed": live.resumed,
            "state": live.state(),
            "budget_frames": live.budget_frames,
            "objectives": objectives,
            "folder": str(opened["folder"]),
            "since_seq": live.since_seq,
            # e.g. a budget larger than the sample's fresh regions: said before the first frame
            "warnings": [str(w) for w in opened.get("warnings") or []],
        }
        if key is not None:
            self._idempotency[key] = (request_print, result)
        return result

    def _overrides_for(self, params: StartParams) -> dict[str, Any]:
        protected = sorted(set(params.overrides) - set(OVERRIDABLE_SECTIONS))
        if protected:
            raise ProtocolError(
                "forbidden",
                f"overrides of {', '.join(protected)} are not accepted from clients; a session "
                f"may override only {', '.join(OVERRIDABLE_SECTIONS)} (safety caps, driver and "
                "daemon settings belong to the site config)",
            )
        overrides: dict[str, Any] = json.loads(json.dumps(params.overrides))
        if params.budget_frames is not None:
            overrides.setdefault("session", {})["budget_frames"] = params.budget_frames
        if params.objectives is not None:
            overrides.setdefault("objectives", {})["names"] = list(params.objectives)
        return overrides

    def _resume_config(
        self, session_id: str, overrides: dict[str, Any], force: bool
    ) -> LoadedConfig:
        """The settings a resumed session runs with: today's site configuration, the session's
        own sections from its ledger, then the client's overrides (``config.resume``). Caps
        and every machine setting are the site's; a recorded space beyond today's caps is
        refused naming both values, or with ``force`` continues inside the site's space."""
        from stedloop.config.resume import resume_settings
        from stedloop.store import SessionNotFound

        try:
            record = self._store.open(session_id, readonly=True)
            try:
                recorded = dict(record.history().created.get("config") or {})
            finally:
                record.close()
        except SessionNotFound as exc:
            raise ProtocolError("not_found", str(exc)) from None
        except DataError as exc:  # a damaged ledger
            raise ProtocolError("storage", f"cannot resume: {exc}") from None
        try:
            loaded, notes = resume_settings(self._loaded, recorded, session_id, overrides, force)
        except ConfigError as exc:
            raise ProtocolError("invalid_params", str(exc)) from None
        for note in notes:
            log.warning("resume_note", session_id=session_id, note=note)
            self._publish(ev.Log(level="warning", message=note), session_id)
        return loaded

    def _apply_overrides(self, overrides: dict[str, Any]) -> LoadedConfig:
        config = self._loaded.config
        if isinstance(overrides.get("params"), dict):
            # Ranges beyond the site's safety caps are refused with their own code.
            merged = {**config.params.model_dump(mode="python")}
            for name, table in overrides["params"].items():
                if isinstance(table, dict) and isinstance(merged.get(name), dict):
                    merged[name] = {**merged[name], **table}
                else:
                    merged[name] = table
            try:
                space = ParamSpace.model_validate(merged)
            except (ValueError, StedloopError):
                space = None  # reported below by the full validation, with key names
            if space is not None:
                try:
                    space.check_within_caps(config.safety)
                except SafetyCapExceeded as exc:
                    raise ProtocolError("param_rejected", str(exc)) from None
        try:
            return with_overrides(self._loaded, overrides)
        except ConfigError as exc:
            raise ProtocolError("invalid_params", str(exc)) from None

    def _open_session(
        self, params: StartParams, loaded: LoadedConfig, objectives: list[str], since_seq: int
    ) -> dict[str, Any]:
        """Have the engine create (or resume) the session and start running it; its
        ``opened`` body (by then ``on_engine_message`` made it the current session)."""
        engine = self.engine
        if engine is None:
            if self._engine_error is not None:
                raise ProtocolError(
                    "unavailable",
                    f"the session engine could not be restarted ({self._engine_error}); "
                    "restart the daemon",
                )
            raise ProtocolError("busy", "the session engine is restarting; retry shortly")
        self._opening = (objectives, params.resume is not None, since_seq)
        try:
            return engine.open(
                {
                    "loaded": loaded,
                    "resume": params.resume,
                    "force": params.force,
                    "name": params.name,
                    "warm_start": list(params.warm_start or []),
                }
            )
        finally:
            self._opening = None

    # -- what the engine says (the link's reader thread, in order) -------------------------
    def on_engine_message(self, kind: str, body: dict[str, Any]) -> None:
        if kind == "opened":
            self._opened(body)
        elif kind == "event":
            self._on_event(str(body["session_id"]), ev.from_data(body["event"]))
        elif kind == "ended":
            self._ended(str(body["session_id"]), body.get("summary"), body.get("error"))
        else:
            log.warning("engine_message_unknown", kind=kind)

    def _opened(self, body: dict[str, Any]) -> None:
        objectives, resumed, since_seq = self._opening or ([], False, self._bus.last_seq)
        live = LiveSession(
            id=str(body["session_id"]),
            token=secrets.token_urlsafe(24),
            control=SessionControl(),  # mirrors the engine's: replies show the state at once
            budget_frames=int(body["budget_frames"]),
            objectives=objectives,
            resumed=resumed,
            since_seq=since_seq,
            progress=ev.Progress.model_validate(body["progress"]),
        )
        with self._lock:
            self._current = live
            self._tokens[live.id] = live.token
            if live.id in self.interrupted:
                self.interrupted.remove(live.id)
        log.info("session_started", session_id=live.id, resumed=resumed, objectives=objectives)

    def _live(self, session_id: str) -> LiveSession | None:
        with self._lock:
            live = self._current
        return live if live is not None and live.id == session_id else None

    def _on_event(self, session_id: str, event: ev.SessionEvent) -> None:
        live = self._live(session_id)
        if live is not None:
            with self._lock:
                if isinstance(event, ev.CarriesProgress) and event.frames_done is not None:
                    live.progress = ev.Progress(
                        frames_done=event.frames_done,
                        best_score=event.best_score,
                        best_params=event.best_params,
                    )
                if isinstance(event, ev.FrameOutcome):
                    live.last_frame = event
                elif isinstance(event, ev.Ended):
                    live.end_state = event.state
            if isinstance(event, ev.Paused):  # also a pause the engine made for a fault
                live.control.request_pause()
                live.control.enter_pause()
            elif isinstance(event, ev.Resumed):
                live.control.resume()
        self._publish(event, session_id)

    def _ended(self, session_id: str, summary: dict[str, Any] | None, error: str | None) -> None:
        live = self._live(session_id)
        if live is None:
            return
        if error is not None:
            with self._lock:
                live.error = error
            self._publish(ev.Log(level="error", message=f"session failed: {error}"), live.id)
            self._publish(ev.Stopped(state="failed", reason=error), live.id)
        with self._lock:
            live.summary = summary or {}
            live.finished = True
        live.control.mark_finished()
        live.done.set()
        log.info(
            "session_ended",
            session_id=live.id,
            state=live.state(),
            frames=live.progress.frames_done,
        )

    def engine_lost(self, exit_code: int | None) -> None:
        """The engine exited on its own: the session it ran (if any) has failed."""
        with self._lock:
            live = self._current
            self.engine = None
        if live is not None and not live.finished:
            log.error("session_crashed", session_id=live.id, engine_exit_code=exit_code)
            if live.end_state is None:  # its ledger has no end: resumable, like after a kill
                with self._lock:
                    self.interrupted.append(live.id)
            self._ended(live.id, None, f"the session engine exited (code {exit_code})")

    def engine_replaced(self, engine: EngineLink | None, error: str | None = None) -> None:
        """A fresh engine (driver connected and safe), or None and why not."""
        with self._lock:
            self.engine = engine
            self._engine_error = error

    def _publish(self, event: ev.SessionEvent, session_id: str) -> None:
        """Events with a topic go on the bus (``data``: the event's wire form, and the id)."""
        if event.topic is not None:
            self._bus.publish(event.topic, {"session": session_id, **event.to_wire()}, session_id)

    # -- control --------------------------------------------------------------------------
    def _authorised(self, session_id: str, token: str) -> LiveSession:
        with self._lock:
            expected = self._tokens.get(session_id)
            current = self._current
        if expected is None:
            known = {info.id for info in self._store.list()}
            if session_id not in known:
                raise ProtocolError("not_found", f"no session {session_id!r}")
            raise ProtocolError(
                "conflict", f"session {session_id} is not running in this daemon (resume it first)"
            )
        if not hmac.compare_digest(expected.encode(), token.encode()):
            raise ProtocolError(
                "forbidden",
                f"wrong token for session {session_id}: only the client that started it "
                "(or one holding its token) may control it",
            )
        if current is None or current.id != session_id or current.ended:
            raise ProtocolError("conflict", f"session {session_id} is no longer running")
        return current

    def _command(self, command: str, abort: bool = False) -> None:
        """Send a control command to the engine (a gone engine has stopped the session)."""
        engine = self.engine
        if engine is not None:
            with contextlib.suppress(ProtocolError):
                engine.send("control", command=command, abort=abort)

    def stop(self, session_id: str, token: str, abort: bool) -> dict[str, Any]:
        live = self._authorised(session_id, token)
        live.control.request_stop(abort=abort)
        self._command("stop", abort)
        log.info("session_stop_requested", session_id=session_id, abort=abort)
        return {"session_id": session_id, "state": live.state(), "abort": abort}

    def pause(self, session_id: str, token: str) -> dict[str, Any]:
        live = self._authorised(session_id, token)
        live.control.request_pause()
        self._command("pause")
        return {"session_id": session_id, "state": live.state()}

    def resume(self, session_id: str, token: str) -> dict[str, Any]:
        live = self._authorised(session_id, token)
        live.control.resume()
        self._command("resume")
        return {"session_id": session_id, "state": live.state()}

    def abort_current(self) -> None:
        """Stop now, interrupting the frame in flight (a second stop signal)."""
        with self._lock:
            live = self._current
        if live is not None and not live.finished:
            live.control.request_stop(abort=True)
            self._command("stop", abort=True)

    # -- status ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any] | None:
        with self._lock:
            live = self._current
            if live is None:
                return None
            last = live.last_frame
            return {
                "id": live.id,
                "state": live.state(),
                "resumed": live.resumed,
                "frames": live.progress.frames_done,  # protocol v1's name for frames_done
                "frames_done": live.progress.frames_done,
                "budget_frames": live.budget_frames,
                "best_score": live.progress.best_score,
                "best_params": live.progress.best_params,
                "objectives": live.objectives,
                "started_at_s": live.started_at_s,
                "since_seq": live.since_seq,
                "last_frame": _brief(last.to_wire()) if last else None,
                "summary": live.summary,
                "error": live.error,
            }

    @property
    def running(self) -> bool:
        """A session is running (or paused): it has not sent its final event."""
        with self._lock:
            live = self._current
            return live is not None and not live.finished and not live.ended


def _brief(frame_event: dict[str, Any]) -> dict[str, Any]:
    """The last frame event without bulky fields, for status replies."""
    return {
        k: v
        for k, v in frame_event.items()
        if not isinstance(v, (list, dict))
        or k
        in (
            "params",
            "objectives",
            "best_params",
        )
    }
