"""The session engine: the daemon's child process that drives the instrument and runs sessions.

Started by the daemon as ``python -m stedloop.server.engine --parent-pid PID``; the first line
on stdin gives the address and key of the daemon's private connection (see
engine_messages.py for what travels on it). The engine holds the driver for the daemon's
life (``open_driver`` with the daemon's instrument claim, inherited as a descriptor), loads
the quality model, and runs each session (scoring, optimizer, TIFF and ledger writes) in a
thread of its own, so that none of that work competes with the daemon's request loop for an
interpreter. It sends every session event to the daemon, which publishes it and keeps status.

Its main thread waits for the daemon's messages. When the daemon is gone (the connection
closed, or the parent changed) nothing can stop the session any more, so the engine exits at
once, as the daemon's own death would have ended a session before: the session's ledger
shows it interrupted (resumable), and the instrument is left as the driver-worker rules say
(docs/worker.md): a driver in a worker sees its parent gone and aborts the frame, then makes
the lasers safe; a driver in this process is first asked to abort and to go safe, within a
bounded time. On SIGTERM, SIGINT or SIGHUP the engine stops the session (aborting the frame),
makes the lasers safe and closes the driver before it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from stedloop.config import LoadedConfig
from stedloop.errors import (
    ConfigError,
    DataError,
    ParameterRejected,
    PluginError,
    StedloopError,
    StorageError,
)
from stedloop.instrument import OpenDriver, instrument_claim, open_driver
from stedloop.logs import configure_logging, get_logger
from stedloop.paths import data_dir
from stedloop.server.engine_messages import (
    EXIT_BAD_START,
    EXIT_OK,
    EXIT_PARENT_LOST,
    Message,
)
from stedloop.server.scorer_loader import QUALITY_OBJECTIVE, ScorerLoader
from stedloop.wire.protocol import ProtocolError

if TYPE_CHECKING:
    from stedloop import events as ev
    from stedloop.driver import Driver
    from stedloop.quality.scorer_protocol import Scorer
    from stedloop.session.control import SessionControl
    from stedloop.session.runner import Session
    from stedloop.store.session_store import SessionStore

log = get_logger("stedloop.server.engine")

#: How often the main thread looks at its parent and the quality model between messages.
TICK_S = 0.1
#: How long an open waits for the previous session's thread to finish its cleanup.
CLEANUP_WAIT_S = 2.0
#: After an abort, how long to wait for the session thread before closing the driver.
ABORT_WAIT_S = 15.0
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")


@dataclass
class _Run:
    session_id: str
    control: SessionControl
    thread: threading.Thread


class Engine:
    def __init__(
        self, conn: Connection, loaded: LoadedConfig, lock_fd: int | None, parent_pid: int
    ) -> None:
        self._conn = conn
        self._send_lock = threading.Lock()  # the session thread and the watchdog send too
        self._loaded = loaded
        self.config = loaded.config
        self._lock_fd = lock_fd
        self._parent_pid = parent_pid
        self._instrument: OpenDriver | None = None
        self._scorer = ScorerLoader(self.config.quality)
        self._store: SessionStore | None = None
        self._run: _Run | None = None
        self._run_lock = threading.Lock()
        self._stop_signal: int | None = None
        #: Set when the daemon is gone: the session thread stops at its next event.
        self._exiting = threading.Event()
        self._parked = threading.Event()

    # -- messages ---------------------------------------------------------------------------
    def _send(self, kind: str, **body: Any) -> None:
        # The daemon may be gone: the main thread sees that too, and exits.
        with self._send_lock, contextlib.suppress(OSError, ValueError):
            self._conn.send((kind, body))

    # -- life -------------------------------------------------------------------------------
    def serve(self) -> int:
        self._install_signals()
        if not self._open_driver():
            return EXIT_BAD_START
        from stedloop.store import SessionStore

        self._store = SessionStore(data_dir(self.config.store.data_dir) / "sessions")
        scorer_seen = self._scorer.snapshot()  # sent with `ready`
        while True:
            snapshot = self._scorer.snapshot()
            if snapshot != scorer_seen:
                scorer_seen = snapshot
                self._send("scorer", snapshot=snapshot)
            if self._stop_signal is not None:
                self._close(0.0)
                return 128 + self._stop_signal
            if os.getppid() != self._parent_pid:
                self._parent_lost("the daemon's process exited")
            try:
                if not self._conn.poll(TICK_S):
                    continue
                message: Message = self._conn.recv()
            except (EOFError, OSError):
                self._parent_lost("the daemon's connection closed")
            kind, body = message
            if kind == "open":
                self._open(body)
            elif kind == "control":
                self._control(str(body["command"]), bool(body.get("abort")))
            elif kind == "shutdown":
                self._close(float(body["grace_s"]))
                self._send("closed")
                return EXIT_OK
            else:
                log.warning("engine_unknown_message", kind=kind)

    def _open_driver(self) -> bool:
        claim = instrument_claim(self.config)
        if self._lock_fd is not None:
            claim.adopt(self._lock_fd)
        try:
            self._instrument = open_driver(
                self.config, "`stedloop serve`", claim=claim, on_fault=self._on_worker_fault
            )
            description = self._instrument.driver.describe()
        except BaseException as exc:  # reported by the daemon, in one line
            if self._instrument is not None:
                with contextlib.suppress(Exception):
                    self._instrument.close()
            else:
                claim.release()
            user_error = isinstance(exc, StedloopError)
            self._send("failed", error=type(exc).__name__, message=str(exc), user_error=user_error)
            return False
        if QUALITY_OBJECTIVE in self.config.objectives.names:
            self._scorer.start()  # before `ready`: status says `loading` from the start
        self._send(
            "ready",
            scorer=self._scorer.snapshot(),
            driver={
                "name": description.name,
                "in_worker": self.config.driver.in_worker,
                "pixel_size_nm": description.pixel_size_nm,
                "field_of_view_px": list(description.field_of_view_px),
            },
        )
        return True

    def _install_signals(self) -> None:
        for name in STOP_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                signal.signal(number, self._on_signal)

    def _on_signal(self, number: int, _frame: FrameType | None) -> None:
        self._stop_signal = number

    def _close(self, grace_s: float) -> None:
        """Stop the session (the frame in flight gets ``grace_s``, then is aborted), then make
        the lasers safe and close the driver."""
        with self._run_lock:
            run = self._run
        if run is not None and run.thread.is_alive():
            run.control.request_stop(abort=False)
            self._wait_for(run, grace_s)
            if run.thread.is_alive():
                log.warning("shutdown_step", step="aborting the frame in flight")
                run.control.request_stop(abort=True)
                self._wait_for(run, ABORT_WAIT_S)
            if run.thread.is_alive():
                log.error("session_thread_did_not_stop", session_id=run.session_id)
        if self._instrument is not None:
            try:
                self._instrument.close()
            except Exception:
                log.exception("driver_close_failed")

    def _wait_for(self, run: _Run, timeout_s: float) -> None:
        """Wait for the session thread, still taking control messages: a second stop signal
        at the daemon sends the abort that ends the grace period early."""
        deadline = time.monotonic() + timeout_s
        while run.thread.is_alive() and time.monotonic() < deadline:
            run.thread.join(min(TICK_S, max(0.0, deadline - time.monotonic())))
            try:
                while self._conn.poll(0):
                    kind, body = self._conn.recv()
                    if kind == "control":
                        self._control(str(body["command"]), bool(body.get("abort")))
            except (EOFError, OSError):
                self._parent_lost("the daemon's connection closed")

    def _parent_lost(self, why: str) -> NoReturn:
        """Exit now: nobody can control the session any more (see the module's docstring)."""
        log.error("engine_parent_lost", reason=why)
        instrument = self._instrument
        if instrument is not None and not self.config.driver.in_worker:
            self._make_safe_before_exit(instrument.driver)
        sys.stderr.flush()
        os._exit(EXIT_PARENT_LOST)

    def _make_safe_before_exit(self, driver: Driver) -> None:
        """The worker's exit rules (worker/safe_exit.py) for a driver in this process: park
        the session thread at its next event (so no frame starts again), abort the frame in
        flight, wait for it up to the abort grace period, then command the safe state, in a
        thread of its own bounded by the call timeout."""
        self._exiting.set()
        with self._run_lock:
            run = self._run
        with contextlib.suppress(Exception):
            driver.request_abort()  # part of the Driver protocol; a fault here must not stop us
        if run is not None:
            deadline = time.monotonic() + self.config.worker.abort_grace_period_s
            while not self._parked.is_set() and run.thread.is_alive():
                if time.monotonic() >= deadline:
                    break
                self._parked.wait(0.02)

        def make_safe() -> None:
            try:
                driver.safe_state()
            except Exception:
                log.exception("safe_state_failed")

        thread = threading.Thread(target=make_safe, name="last-safe-state", daemon=True)
        thread.start()
        thread.join(self.config.worker.call_timeout_s)

    # -- faults of the driver worker (its watchdog thread) -----------------------------------
    def _on_worker_fault(self, kind: str, info: dict[str, Any]) -> None:
        self._send("fault", fault=kind, info=info)
        with self._run_lock:
            run = self._run
        if run is not None and run.thread.is_alive():
            run.control.request_pause()
            log.warning("session_paused_for_fault", session_id=run.session_id, reason=kind)

    # -- sessions ---------------------------------------------------------------------------
    def _open(self, body: dict[str, Any]) -> None:
        request_id = body["request_id"]
        try:
            with self._run_lock:
                previous = self._run
            if previous is not None:
                previous.thread.join(CLEANUP_WAIT_S)
                if previous.thread.is_alive():
                    raise ProtocolError(
                        "conflict",
                        f"session {previous.session_id} is still running; the daemon runs one "
                        "session at a time (stop it first)",
                    )
            session = self._open_session(body)
        except ProtocolError as exc:
            self._send("refused", request_id=request_id, code=exc.code, message=exc.message)
            return
        except Exception as exc:  # a bug: the daemon answers `internal`
            log.exception("session_open_failed")
            self._send(
                "refused",
                request_id=request_id,
                code="internal",
                message=f"{type(exc).__name__}: {exc} (see log)",
            )
            return
        from stedloop.session.control import SessionControl

        loaded: LoadedConfig = body["loaded"]
        self._send(
            "opened",
            request_id=request_id,
            session_id=str(session.id),
            folder=str(session.folder),
            budget_frames=loaded.config.session.budget_frames,
            progress=session.progress.model_dump(mode="json"),
            warnings=session.warnings,
        )
        control = SessionControl()
        thread = threading.Thread(
            target=self._run_session, args=(session, control), name=f"session-{session.id}"
        )
        with self._run_lock:
            self._run = _Run(str(session.id), control, thread)
        thread.start()

    def _open_session(self, body: dict[str, Any]) -> Session:
        loaded: LoadedConfig = body["loaded"]
        scorer = self._scorer.scorer_for(list(loaded.config.objectives.names))
        assert self._instrument is not None and self._store is not None
        return open_session(
            loaded,
            self._instrument.driver,
            self._store,
            scorer,
            resume=body.get("resume"),
            force=bool(body.get("force")),
            name=body.get("name"),
            warm_start=body.get("warm_start") or [],
        )

    def _run_session(self, session: Session, control: SessionControl) -> None:
        session_id = str(session.id)

        def on_event(event: ev.SessionEvent) -> None:
            if self._exiting.is_set():  # the daemon is gone: go no further, the process exits
                self._parked.set()
                threading.Event().wait()
            self._send("event", session_id=session_id, event=event.to_data())

        summary: dict[str, Any] | None = None
        error: str | None = None
        try:
            summary = session.run(control, on_event).as_dict()
        except Exception as exc:  # the session should record faults; this is a last resort
            log.exception("session_crashed", session_id=session_id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if self._instrument is not None:
                try:
                    self._instrument.driver.safe_state()
                except Exception:
                    log.exception("safe_state_failed")
            with contextlib.suppress(Exception):
                session.close()
            self._send("ended", session_id=session_id, summary=summary, error=error)

    def _control(self, command: str, abort: bool) -> None:
        with self._run_lock:
            run = self._run
        if run is None or not run.thread.is_alive():
            return
        if command == "stop":
            run.control.request_stop(abort=abort)
        elif command == "pause":
            run.control.request_pause()
        elif command == "resume":
            run.control.resume()


def open_session(
    loaded: LoadedConfig,
    driver: Driver,
    store: SessionStore,
    scorer: Scorer | None,
    *,
    resume: str | None = None,
    force: bool = False,
    name: str | None = None,
    warm_start: list[str] | None = None,
) -> Session:
    """Create (or resume) a session; a ``ProtocolError`` with the code the daemon answers
    for each way that can fail."""
    from stedloop.session.runner import Session
    from stedloop.store import SessionNotFound

    try:
        if resume is not None:
            return Session.resume(resume, loaded, driver, store=store, scorer=scorer, force=force)
        return Session.start(
            loaded, driver, store=store, scorer=scorer, name=name, warm_from=warm_start or []
        )
    except SessionNotFound as exc:
        raise ProtocolError("not_found", str(exc)) from None
    except StorageError as exc:  # e.g. a full disk: nothing was left behind
        raise ProtocolError("storage", str(exc)) from None
    except DataError as exc:  # a damaged ledger (the session's, or a warm start's)
        raise ProtocolError(
            "storage", f"cannot resume: {exc}" if resume is not None else str(exc)
        ) from None
    except ParameterRejected as exc:
        raise ProtocolError("param_rejected", str(exc)) from None
    except (ConfigError, PluginError) as exc:
        raise ProtocolError("invalid_params", str(exc)) from None
    except StedloopError as exc:  # e.g. resuming a finished session, or a changed space
        raise ProtocolError("conflict", str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stedloop.server.engine",
        description="stedloop session engine (started by `stedloop serve`)",
    )
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    faulthandler.enable()
    try:
        hello = json.loads(sys.stdin.readline())
        conn = Client(hello["address"], authkey=bytes.fromhex(hello["authkey"]))
        kind, body = conn.recv()
    except (ValueError, KeyError, OSError, EOFError) as exc:
        print(f"stedloop engine: no connection to the daemon: {exc}", file=sys.stderr)
        return EXIT_BAD_START
    if kind != "init":
        return EXIT_BAD_START
    loaded: LoadedConfig = body["loaded"]
    section = loaded.config.logging
    configure_logging(section.level, section.json_file)
    code = Engine(conn, loaded, body.get("lock_fd"), args.parent_pid).serve()
    # A session thread may be stuck in a hung driver call; exit without waiting for it.
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
