"""The daemon's session slot: at most one optimisation session, run in a worker thread.

The request loop calls ``start``/``stop``/``pause``/``resume``/``snapshot`` and never waits
for an acquisition: the session runs in its own thread with a ``SessionControl``, and its
events go to the ``EventBus``. Only the holder of a session's token may control it.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stedloop import events as ev
from stedloop.config import LoadedConfig, with_overrides
from stedloop.errors import (
    ConfigError,
    DataError,
    ParameterRejected,
    PluginError,
    SafetyCapExceeded,
    StedloopError,
    StorageError,
)
from stedloop.logs import get_logger
from stedloop.params import ParamSpace
from stedloop.server.events import EventBus
from stedloop.server.methods import OVERRIDABLE_SECTIONS, StartParams
from stedloop.server.scorer_loader import ScorerLoader
from stedloop.wire.protocol import ProtocolError

if TYPE_CHECKING:  # the session runner loads numpy and the optimizer: only when one starts
    from stedloop.driver import Driver
    from stedloop.quality.scorer_protocol import Scorer
    from stedloop.session.control import SessionControl
    from stedloop.session.runner import Session
    from stedloop.store.session_store import SessionStore

log = get_logger(__name__)

#: How long to wait for a session thread after an abort before giving up on it.
ABORT_WAIT_S = 15.0
#: How long session.start waits for a just-ended session's thread to finish its cleanup.
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
    thread: threading.Thread | None = None
    #: Bus events of this run have a seq above this (``follow(since_seq=...)`` shows the run
    #: from its start, not an earlier run of the same session).
    since_seq: int = 0
    #: The session's own count and best point (a resumed one's include earlier runs).
    progress: ev.Progress = field(default_factory=ev.Progress)
    last_frame: ev.FrameOutcome | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    end_state: str | None = None  # set by the run's final session event (cleanup may remain)
    finished: bool = False  # the worker thread is done

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
        driver: Driver,
        store: SessionStore,
        bus: EventBus,
        scorer: ScorerLoader,
    ) -> None:
        self._loaded = loaded
        self._driver = driver
        self._store = store
        self._bus = bus
        self._scorer = scorer
        self._lock = threading.Lock()
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
        if current is not None and current.thread is not None:
            if current.ended or current.control.state == "finished":
                # The run has ended (its last event is out); only cleanup is left: wait for it
                # so two sessions never touch the driver at once.
                current.thread.join(CLEANUP_WAIT_S)
            if current.thread.is_alive():
                raise ProtocolError(
                    "conflict",
                    f"session {current.id} is {current.state()}; the daemon runs one session "
                    "at a time (stop it first)",
                )
        overrides = self._overrides_for(params)
        if params.resume is not None:
            loaded = self._resume_config(params.resume, overrides, params.force)
        else:
            loaded = self._apply_overrides(overrides)
        objectives = list(loaded.config.objectives.names)
        scorer = self._scorer.scorer_for(objectives)
        session = self._open_session(params, loaded, scorer)
        live = self._launch(
            session, loaded, objectives, resumed=params.resume is not None, since_seq=since_seq
        )
        result = {
            "session_id": live.id,
            "token": live.token,
            "resumed": live.resumed,
            "state": live.state(),
            "budget_frames": live.budget_frames,
            "objectives": objectives,
            "folder": str(getattr(session, "folder", "")),
            "since_seq": live.since_seq,
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
        self, params: StartParams, loaded: LoadedConfig, scorer: Scorer | None
    ) -> Session:
        from stedloop.session.runner import Session
        from stedloop.store import SessionNotFound

        try:
            if params.resume is not None:
                return Session.resume(
                    params.resume,
                    loaded,
                    self._driver,
                    store=self._store,
                    scorer=scorer,
                    force=params.force,
                )
            return Session.start(
                loaded, self._driver, store=self._store, scorer=scorer, name=params.name
            )
        except SessionNotFound as exc:
            raise ProtocolError("not_found", str(exc)) from None
        except StorageError as exc:  # e.g. a full disk: nothing was left behind
            raise ProtocolError("storage", str(exc)) from None
        except DataError as exc:  # a damaged ledger
            raise ProtocolError("storage", f"cannot resume: {exc}") from None
        except ParameterRejected as exc:
            raise ProtocolError("param_rejected", str(exc)) from None
        except (ConfigError, PluginError) as exc:
            raise ProtocolError("invalid_params", str(exc)) from None
        except StedloopError as exc:  # e.g. resuming a finished session, or a changed space
            raise ProtocolError("conflict", str(exc)) from None

    def _launch(
        self,
        session: Session,
        loaded: LoadedConfig,
        objectives: list[str],
        resumed: bool,
        since_seq: int,
    ) -> LiveSession:
        from stedloop.session.control import SessionControl

        live = LiveSession(
            id=str(session.id),
            token=secrets.token_urlsafe(24),
            control=SessionControl(),
            budget_frames=loaded.config.session.budget_frames,
            objectives=objectives,
            resumed=resumed,
            since_seq=since_seq,
            progress=session.progress,
        )
        live.thread = threading.Thread(
            target=self._run, args=(session, live), name=f"session-{live.id}", daemon=True
        )
        with self._lock:
            self._current = live
            self._tokens[live.id] = live.token
            if live.id in self.interrupted:
                self.interrupted.remove(live.id)
        log.info("session_started", session_id=live.id, resumed=resumed, objectives=objectives)
        live.thread.start()
        return live

    def _run(self, session: Session, live: LiveSession) -> None:
        def on_event(event: ev.SessionEvent) -> None:
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
            self._publish(event, live.id)

        try:
            summary = session.run(live.control, on_event)
            summary_dict = _as_dict(summary)
            with self._lock:
                live.summary = summary_dict
        except Exception as exc:  # the session should record faults; this is a last resort
            log.exception("session_crashed", session_id=live.id)
            with self._lock:
                live.error = f"{type(exc).__name__}: {exc}"
            self._publish(ev.Log(level="error", message=f"session failed: {live.error}"), live.id)
            self._publish(ev.Stopped(state="failed", reason=live.error), live.id)
        finally:
            self._safe_state()
            with contextlib.suppress(Exception):
                session.close()
            with self._lock:
                live.finished = True
            log.info(
                "session_ended",
                session_id=live.id,
                state=live.state(),
                frames=live.progress.frames_done,
            )

    def _publish(self, event: ev.SessionEvent, session_id: str) -> None:
        """Events with a topic go on the bus (``data``: the event's wire form, and the id)."""
        if event.topic is not None:
            self._bus.publish(event.topic, {"session": session_id, **event.to_wire()}, session_id)

    def _safe_state(self) -> None:
        try:
            self._driver.safe_state()
        except Exception:
            log.exception("safe_state_failed")

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

    def stop(self, session_id: str, token: str, abort: bool) -> dict[str, Any]:
        live = self._authorised(session_id, token)
        live.control.request_stop(abort=abort)
        log.info("session_stop_requested", session_id=session_id, abort=abort)
        return {"session_id": session_id, "state": live.state(), "abort": abort}

    def pause(self, session_id: str, token: str) -> dict[str, Any]:
        live = self._authorised(session_id, token)
        live.control.request_pause()
        return {"session_id": session_id, "state": live.state()}

    def resume(self, session_id: str, token: str) -> dict[str, Any]:
        live = self._authorised(session_id, token)
        live.control.resume()
        return {"session_id": session_id, "state": live.state()}

    def pause_for_fault(self, reason: str) -> None:
        """A driver-worker fault: pause the running session until a user resumes it."""
        with self._lock:
            live = self._current
        if live is not None and not live.finished:
            live.control.request_pause()
            log.warning("session_paused_for_fault", session_id=live.id, reason=reason)

    def abort_current(self) -> None:
        """Stop now, interrupting the frame in flight (a second stop signal)."""
        with self._lock:
            live = self._current
        if live is not None and not live.finished:
            live.control.request_stop(abort=True)

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
            return (
                live is not None
                and live.thread is not None
                and live.thread.is_alive()
                and not live.ended
            )

    def shutdown(self, grace_s: float, on_step: Callable[[str], None] | None = None) -> None:
        """Stop the session: let the frame in flight finish for ``grace_s``, then abort."""
        with self._lock:
            live = self._current
        if live is None or live.thread is None or not live.thread.is_alive():
            return
        live.control.request_stop(abort=False)
        live.thread.join(grace_s)
        if live.thread.is_alive():
            if on_step is not None:
                on_step("aborting the frame in flight")
            live.control.request_stop(abort=True)
            live.thread.join(ABORT_WAIT_S)
        if live.thread.is_alive():
            log.error("session_thread_did_not_stop", session_id=live.id)


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "as_dict"):
        return dict(obj.as_dict())
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    return {"repr": repr(obj)}


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
