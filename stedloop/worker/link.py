"""One driver worker process and the socket to it, as the daemon sees them.

The daemon binds a ROUTER socket on a private ipc path (or 127.0.0.1 with a random port),
starts the worker, and writes it a random token on stdin; the worker connects with that token
as its routing id, and messages from any other peer are ignored. An I/O thread owns the
socket: it forwards requests queued by any thread, resolves their futures when replies come,
records heartbeats and sends keepalives, so control calls never wait behind a frame.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Literal

import zmq

from stedloop.config.schema import WorkerSection
from stedloop.errors import DriverDisconnected, DriverError
from stedloop.logs import get_logger
from stedloop.worker import protocol
from stedloop.worker.process import IPC_FOLDER_PREFIX
from stedloop.worker.spawn import detached_child_kwargs

log = get_logger("stedloop.worker")

_STOP = b"__stop__"


def resolve_transport(choice: Literal["auto", "ipc", "tcp"]) -> Literal["ipc", "tcp"]:
    """ipc where the platform has it (not Windows), else tcp on loopback."""
    if choice == "auto":
        return "ipc" if os.name != "nt" and zmq.has("ipc") else "tcp"
    if choice == "ipc" and (os.name == "nt" or not zmq.has("ipc")):
        raise DriverError("worker.transport = 'ipc' is not available here; use 'tcp' or 'auto'")
    return choice


@dataclass
class _Pending:
    future: Future[Any]
    method: str


class WorkerLink:
    """A started worker process, its socket and the I/O thread serving them."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        settings: WorkerSection,
        python_executable: str,
        log_level: str = "info",
        inherit_fds: tuple[int, ...] = (),
    ) -> None:
        self.settings = settings
        self._inherit_fds = inherit_fds
        self.token = secrets.token_hex(16)
        self._ident = self.token.encode("ascii")
        # The worker's main thread uses the token as routing id; its driver thread sends
        # replies from a second socket named token + REPLY_SUFFIX. Anything else is ignored.
        self._peers = {self._ident, (self.token + protocol.REPLY_SUFFIX).encode("ascii")}
        self._tmpdir: str | None = None
        self.router = context.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.router_mandatory = 1
        if resolve_transport(settings.transport) == "ipc":
            # A private (0700) folder: no other user can reach the socket.
            self._tmpdir = tempfile.mkdtemp(prefix=IPC_FOLDER_PREFIX)
            self.address = f"ipc://{self._tmpdir}/w.sock"
            self.router.bind(self.address)
        else:
            port = self.router.bind_to_random_port("tcp://127.0.0.1")
            self.address = f"tcp://127.0.0.1:{port}"
        inproc = f"inproc://worker-link-{id(self)}"
        self._commands = context.socket(zmq.PULL)
        self._commands.linger = 0
        self._commands.bind(inproc)
        self._command_sender = context.socket(zmq.PUSH)
        self._command_sender.linger = 0
        self._command_sender.connect(inproc)
        self._send_lock = threading.Lock()  # the PUSH socket is shared by calling threads
        self._pending: dict[int, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.hello: dict[str, Any] | None = None
        #: Whether the driver in this worker was connected (kept by the WorkerDriver).
        self.driver_connected = False
        self._hello_event = threading.Event()
        self.status: dict[str, Any] = {}
        self.started_at = time.monotonic()
        self.last_heartbeat = self.started_at
        self._closed = False
        self.python_executable = python_executable
        self.process = self._spawn(python_executable, log_level)
        self.pid = self.process.pid
        self._thread = threading.Thread(
            target=self._serve, name=f"worker-io-{self.pid}", daemon=True
        )
        self._thread.start()

    # -- process -----------------------------------------------------------------------------
    def _spawn(self, python_executable: str, log_level: str) -> subprocess.Popen[bytes]:
        s = self.settings
        command = [
            python_executable,
            "-m",
            "stedloop.worker",
            "--connect",
            self.address,
            "--parent-pid",
            str(os.getpid()),
            "--heartbeat-interval-s",
            repr(s.heartbeat_interval_s),
            # The worker gives up on a silent daemon well after the daemon gives up on it.
            "--parent-timeout-s",
            repr(max(3 * s.heartbeat_timeout_s, 10.0)),
            # Bounds of its exit without us: wait for an aborted frame, then for safe_state.
            "--abort-grace-period-s",
            repr(s.abort_grace_period_s),
            "--call-timeout-s",
            repr(s.call_timeout_s),
            "--log-level",
            log_level,
        ]
        try:
            process = subprocess.Popen(command, **detached_child_kwargs(self._inherit_fds))
        except OSError as exc:
            self._close_sockets()
            raise DriverDisconnected(
                f"cannot start the driver worker with {python_executable!r}: {exc}; "
                "check worker.python_executable"
            ) from None
        assert process.stdin is not None
        try:
            process.stdin.write(self.token.encode("ascii") + b"\n")
            process.stdin.close()
        except OSError:
            pass  # it died at once; the caller sees that in wait_hello
        return process

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    def wait_hello(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the worker to connect; DriverDisconnected if it exits or stays silent."""
        deadline = time.monotonic() + timeout_s
        while not self._hello_event.wait(0.02):
            code = self.process.poll()
            if code is not None:
                raise DriverDisconnected(
                    f"the driver worker exited with code {code} while starting; is stedloop "
                    f"installed for {self.python_executable!r}? (see its log above)"
                )
            if time.monotonic() > deadline:
                raise DriverDisconnected(
                    f"the driver worker did not connect within {timeout_s:g} s"
                )
        assert self.hello is not None
        if self.hello.get("protocol") != protocol.PROTOCOL_VERSION:
            raise DriverError(
                f"the driver worker speaks protocol {self.hello.get('protocol')}, this daemon "
                f"{protocol.PROTOCOL_VERSION}; install the same stedloop version in both "
                "environments"
            )
        return self.hello

    # -- requests ----------------------------------------------------------------------------
    def request(
        self, header: dict[str, Any], buffers: tuple[Any, ...] = (), method: str = ""
    ) -> Future[Any]:
        """Send a call or ping; the future gets the decoded result or a typed error."""
        future: Future[Any] = Future()
        request_id = next(self._ids)
        header = {**header, "id": request_id}
        with self._pending_lock:
            if self._closed:
                future.set_exception(DriverDisconnected("the driver worker was stopped"))
                return future
            self._pending[request_id] = _Pending(future, method or str(header.get("type")))
        self.send(header, buffers)
        return future

    def call(self, method: str, args: dict[str, Any] | None = None, timeout_s: float = 30.0) -> Any:
        future = self.request({"type": "call", "method": method, "args": args or {}}, method=method)
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            raise DriverError(
                f"driver call {method} got no answer within {timeout_s:g} s"
            ) from None

    def send(self, header: dict[str, Any], buffers: tuple[Any, ...] = ()) -> None:
        """Queue a message for the worker (returns at once; the I/O thread sends it)."""
        parts = [protocol.encode_header(header), *buffers]
        with self._send_lock:
            if self._closed:
                return
            try:
                # NOBLOCK: if the I/O thread is gone a PUSH would block forever; the
                # watchdog notices the silence and replaces this link.
                self._command_sender.send_multipart(parts, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._fail_request(parts[0], DriverDisconnected("the worker link is not serving"))

    # -- the I/O thread ----------------------------------------------------------------------
    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self._commands, zmq.POLLIN)
        keepalive = protocol.encode_header({"type": "keepalive"})
        interval_s = self.settings.heartbeat_interval_s
        next_keepalive = time.monotonic() + interval_s
        try:
            while True:
                timeout_ms = max(0, int((next_keepalive - time.monotonic()) * 1000)) + 1
                events = dict(poller.poll(timeout_ms))
                if self._commands in events and not self._forward_commands():
                    return
                if self.router in events:
                    self._receive()
                if time.monotonic() >= next_keepalive:
                    self._to_worker([keepalive])
                    next_keepalive = time.monotonic() + interval_s
        except zmq.ContextTerminated:
            return
        except Exception as exc:  # a bug here silences heartbeats: the watchdog replaces us
            log.exception("worker_io_thread_failed", pid=self.pid, error=repr(exc))
        finally:
            self.router.close(linger=0)
            self._commands.close(linger=0)

    def _forward_commands(self) -> bool:
        while True:
            try:
                parts = self._commands.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return True
            if len(parts) == 1 and parts[0].bytes == _STOP:
                return False
            self._to_worker(parts)

    def _to_worker(self, parts: Sequence[bytes | zmq.Frame]) -> None:
        if self.hello is None:
            return  # not connected yet: callers only send after wait_hello
        try:
            self.router.send_multipart([self._ident, *parts], copy=False)
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the worker went away
            self._fail_request(parts[0], DriverDisconnected(f"the driver worker is gone ({exc})"))

    def _fail_request(self, header_part: bytes | zmq.Frame, error: Exception) -> None:
        raw = header_part if isinstance(header_part, bytes) else header_part.buffer
        try:
            request_id = protocol.decode_header(raw).get("id")
        except protocol.ProtocolError:
            return
        with self._pending_lock:
            pending = self._pending.pop(request_id, None) if request_id is not None else None
        if pending is not None:
            pending.future.set_exception(error)

    def _receive(self) -> None:
        while True:
            try:
                parts = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(parts) < 2 or parts[0].bytes not in self._peers:
                log.warning("worker_stranger_ignored", address=self.address)
                continue
            try:
                header = protocol.decode_header(parts[1].buffer)
            except protocol.ProtocolError as exc:
                log.error("worker_bad_message", pid=self.pid, error=str(exc))
                continue
            self.last_heartbeat = time.monotonic()  # any message is a sign of life
            self._dispatch(header, [p.buffer for p in parts[2:]])

    def _dispatch(self, header: dict[str, Any], buffers: list[memoryview]) -> None:
        kind = header["type"]
        if kind in ("heartbeat", "abort_ack"):
            self.status = header
            return
        if kind == "hello":
            self.hello = header
            self._hello_event.set()
            return
        if kind not in ("reply", "pong"):
            log.warning("worker_unknown_message", type=kind, pid=self.pid)
            return
        with self._pending_lock:
            pending = self._pending.pop(header.get("id"), None)  # type: ignore[arg-type]
        if pending is None:
            return  # a late answer to a call that was given up on
        if kind == "pong":
            self.status = header
            pending.future.set_result(header)
        elif not header.get("ok"):
            pending.future.set_exception(protocol.error_from_dict(header.get("error")))
        else:
            try:
                pending.future.set_result(self._decode_result(pending.method, header, buffers))
            except protocol.ProtocolError as exc:
                pending.future.set_exception(exc)

    @staticmethod
    def _decode_result(method: str, header: dict[str, Any], buffers: list[memoryview]) -> Any:
        result = header.get("result")
        if method == "acquire":
            if not isinstance(result, dict):
                raise protocol.ProtocolError("acquire reply carries no frame")
            return protocol.decode_frame(result, buffers)
        if method == "acquire_overview":
            if not isinstance(result, dict):
                raise protocol.ProtocolError("acquire_overview reply carries no overview")
            return protocol.decode_overview(result, buffers)
        if method == "describe":
            if not isinstance(result, dict):
                raise protocol.ProtocolError("describe reply carries no description")
            return protocol.description_from_dict(result)
        return result

    # -- ending ------------------------------------------------------------------------------
    def kill(self, error: Exception) -> None:
        """Kill the process at once (it may be hung or stopped) and fail every waiting call."""
        with contextlib.suppress(OSError):
            self.process.kill()
        self._finish(error, wait_s=5.0)

    def shutdown(self, timeout_s: float = 2.0) -> None:
        """Ask the worker to exit; kill it if it has not within ``timeout_s``."""
        if self.process.poll() is None and self.hello is not None:
            self.send({"type": "shutdown"})
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("worker_shutdown_timeout", pid=self.pid, timeout_s=timeout_s)
        if self.process.poll() is None:
            self.process.kill()
        self._finish(DriverDisconnected("the driver worker was stopped"), wait_s=5.0)

    def _finish(self, error: Exception, wait_s: float) -> None:
        try:
            self.process.wait(wait_s)
        except subprocess.TimeoutExpired:
            log.error("worker_unkillable", pid=self.pid)
        with self._send_lock:
            if not self._closed:
                self._closed = True
                with contextlib.suppress(zmq.Again):  # the I/O thread may already be gone
                    self._command_sender.send(_STOP, zmq.NOBLOCK)
        self._thread.join(5.0)
        with self._send_lock:
            self._command_sender.close(linger=0)
        with self._pending_lock:
            self._closed = True
            pending, self._pending = list(self._pending.values()), {}
        for item in pending:
            if not item.future.done():
                item.future.set_exception(error)
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def _close_sockets(self) -> None:
        for sock in (self.router, self._commands, self._command_sender):
            sock.close(linger=0)
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
