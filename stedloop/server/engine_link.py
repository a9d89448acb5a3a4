"""The daemon's end of its session engine: start it, talk to it, notice when it is gone.

``EngineLink.start`` spawns ``python -m stedloop.server.engine`` (its own process group, so
a Ctrl-C at the daemon's terminal reaches only the daemon, which then stops the session
through it), hands it the instrument claim's descriptor (``pass_fds``: the instrument stays
claimed until the engine, too, has exited) and waits until its driver is connected and safe.
A reader thread receives the engine's messages and hands each to ``on_message`` in order;
``open`` waits for its answer. The request loop never waits for a frame: only ``open``
(creating or resuming a session's folder) and ``shutdown`` wait for the engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.connection import Connection, Listener
from typing import Any

from stedloop.config import LoadedConfig
from stedloop.errors import StedloopError
from stedloop.logs import get_logger
from stedloop.server.engine_messages import Message
from stedloop.wire.protocol import ProtocolError
from stedloop.worker.spawn import detached_child_kwargs

log = get_logger(__name__)

#: How long the engine may take to connect, open the driver and make it safe.
START_TIMEOUT_S = 120.0
#: How long an ``open`` (creating a session, or replaying a long ledger) may take; one that
#: answers later is stopped at once (nobody holds its token).
OPEN_TIMEOUT_S = 600.0
#: Beyond the grace period, how long ``shutdown`` waits for the engine before killing it.
EXIT_WAIT_S = 30.0

MessageCallback = Callable[[str, dict[str, Any]], None]
ExitCallback = Callable[[int | None], None]


class EngineFailed(StedloopError):
    """The session engine could not start (e.g. the driver could not be opened)."""


class EngineCrashed(RuntimeError):
    """The driver failed in a way that is not a user error (a bug, reported as one)."""


class EngineLink:
    """One session engine process and the connection to it. Thread-safe."""

    def __init__(
        self,
        loaded: LoadedConfig,
        on_message: MessageCallback,
        on_exit: ExitCallback,
        inherit_fds: tuple[int, ...] = (),
    ) -> None:
        self._loaded = loaded
        self._on_message = on_message
        self._on_exit = on_exit
        self._inherit_fds = inherit_fds
        self._conn: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._send_lock = threading.Lock()
        self._pending: dict[str, Future[dict[str, Any]]] = {}
        self._pending_lock = threading.Lock()
        self._ready: Future[dict[str, Any]] = Future()
        self._closing = False
        self._said_closed = False
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- start --------------------------------------------------------------------------------
    def start(self, timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Start the engine; once its driver is connected and safe, its ``ready`` body:
        ``driver`` (``status``'s driver) and ``scorer`` (the quality model's state).
        ``EngineFailed`` (or ``EngineCrashed``) with the engine's reason otherwise."""
        authkey = secrets.token_bytes(32)
        listener = Listener(authkey=authkey)  # a private socket (POSIX) or named pipe
        try:
            self._process = self._spawn(listener.address, authkey)
            self._conn = self._accept(listener, self._process, timeout_s)
        finally:
            listener.close()
        lock_fd = self._inherit_fds[0] if self._inherit_fds else None
        self.send("init", loaded=self._loaded, lock_fd=lock_fd)
        self._reader = threading.Thread(target=self._read, name="engine-reader", daemon=True)
        self._reader.start()
        try:
            return self._ready.result(timeout_s)
        except FutureTimeout:
            self.kill()
            raise EngineFailed(
                f"the session engine did not open the driver within {timeout_s:g} s"
            ) from None
        except BaseException:
            self.kill()
            raise

    def _spawn(self, address: Any, authkey: bytes) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "stedloop.server.engine", "--parent-pid", str(os.getpid())]
        process = subprocess.Popen(command, **detached_child_kwargs(self._inherit_fds))
        assert process.stdin is not None
        try:
            hello = {"address": address, "authkey": authkey.hex()}
            process.stdin.write(json.dumps(hello).encode() + b"\n")
            process.stdin.close()
        except OSError:
            pass  # it died at once; _accept says so
        return process

    @staticmethod
    def _accept(
        listener: Listener, process: subprocess.Popen[bytes], timeout_s: float
    ) -> Connection:
        accepted: list[Connection] = []
        failed: list[BaseException] = []

        def accept() -> None:
            try:
                accepted.append(listener.accept())
            except BaseException as exc:  # closed below on a timeout, or a wrong key
                failed.append(exc)

        thread = threading.Thread(target=accept, name="engine-accept", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout_s
        while thread.is_alive():
            thread.join(0.05)
            code = process.poll()
            if thread.is_alive() and (code is not None or time.monotonic() > deadline):
                process.kill()
                raise EngineFailed(
                    "the session engine did not connect "
                    + (f"(it exited with code {code})" if code is not None else "in time")
                )
        if not accepted:
            process.kill()
            raise EngineFailed(f"the session engine could not connect: {failed[0]}")
        return accepted[0]

    # -- messages -----------------------------------------------------------------------------
    def send(self, kind: str, **body: Any) -> None:
        assert self._conn is not None
        with self._send_lock:
            try:
                self._conn.send((kind, body))
            except (OSError, ValueError) as exc:
                raise ProtocolError(
                    "unavailable", f"the session engine is not running ({exc})"
                ) from None

    def open(self, body: dict[str, Any], timeout_s: float = OPEN_TIMEOUT_S) -> dict[str, Any]:
        """Send an ``open``; its ``opened`` body, or the ``refused`` one as ProtocolError.
        ``on_message`` has seen the ``opened`` before this returns."""
        request_id = secrets.token_hex(8)
        future: Future[dict[str, Any]] = Future()
        with self._pending_lock:
            self._pending[request_id] = future
        try:
            self.send("open", request_id=request_id, **body)
            return future.result(timeout_s)
        except FutureTimeout:
            raise ProtocolError(
                "internal", f"the session engine did not open the session within {timeout_s:g} s"
            ) from None
        finally:
            with self._pending_lock:
                self._pending.pop(request_id, None)

    def _read(self) -> None:
        assert self._conn is not None
        while True:
            try:
                message: Message = self._conn.recv()
            except (EOFError, OSError):
                break
            kind, body = message
            try:
                self._dispatch(kind, body)
            except Exception:  # a bug in a handler must not stop the events
                log.exception("engine_message_failed", kind=kind)
        self._gone()

    def _dispatch(self, kind: str, body: dict[str, Any]) -> None:
        if kind == "ready":
            self._ready.set_result(body)
            return
        if kind == "failed":
            error: Exception = (
                EngineFailed(str(body["message"]))
                if body.get("user_error")
                else EngineCrashed(f"{body['error']}: {body['message']}")
            )
            self._ready.set_exception(error)
            return
        if kind == "closed":
            self._closing = True
            self._said_closed = True
            return
        if kind in ("opened", "refused"):
            with self._pending_lock:
                future = self._pending.get(str(body["request_id"]))
            if kind == "opened":
                self._on_message(kind, body)
                if future is None:  # its request gave up waiting
                    log.warning("engine_open_too_late", session_id=body.get("session_id"))
                    self.send("control", command="stop", abort=True)
            if future is not None:
                if kind == "opened":
                    future.set_result(body)
                else:
                    future.set_exception(ProtocolError(str(body["code"]), str(body["message"])))
            return
        self._on_message(kind, body)

    def _gone(self) -> None:
        """The connection closed: the engine exited (or is exiting)."""
        code = None
        if self._process is not None:
            try:
                code = self._process.wait(5)
            except subprocess.TimeoutExpired:
                code = None
        # Only an engine that was serving is mourned (``on_exit``); one that failed to start
        # is reported by ``start``.
        was_serving = self._ready.done() and self._ready.exception() is None
        error = EngineFailed(f"the session engine exited while starting (code {code})")
        if not self._ready.done():
            self._ready.set_exception(error)
        with self._pending_lock:
            pending = list(self._pending.values())
        for future in pending:
            if not future.done():
                future.set_exception(
                    ProtocolError("unavailable", f"the session engine exited (code {code})")
                )
        if was_serving and not self._closing:
            self._on_exit(code)

    # -- stop ---------------------------------------------------------------------------------
    def shutdown(self, grace_s: float) -> bool:
        """Have the engine stop the session (the frame in flight gets ``grace_s``), make the
        lasers safe and close the driver; kill it if it does not exit in time. Whether it
        said it closed the driver (``closed``) and exited."""
        self._closing = True
        if self._process is None:
            return False
        with_grace = grace_s + EXIT_WAIT_S
        with contextlib.suppress(ProtocolError):  # already gone: waited for below
            self.send("shutdown", grace_s=grace_s)
        try:
            self._process.wait(with_grace)
        except subprocess.TimeoutExpired:
            log.error("engine_did_not_exit", pid=self._process.pid, waited_s=with_grace)
            self.kill()
        if self._reader is not None:  # it reads what the engine said last, up to its exit
            self._reader.join(5.0)
        if self._conn is not None:
            self._conn.close()
        return self._said_closed and self._process.poll() == 0

    def kill(self) -> None:
        self._closing = True
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)
