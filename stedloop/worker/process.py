"""The driver worker process: runs one driver and answers the daemon over ZeroMQ.

Started as ``python -m stedloop.worker --connect ADDR --parent-pid PID``, possibly by another
interpreter (the virtual environment where ``specpy`` lives), so it imports only stedloop's
core and the one configured driver plugin. The first line on stdin is a secret token; it is
the worker's ZeroMQ routing id, so the daemon ignores any other peer on the socket.

Two threads: the driver thread runs driver calls one at a time (they may block for a whole
frame, or forever); the main thread owns the socket and answers heartbeats, pings and aborts
at once, so the daemon always knows whether the worker is alive and what it is doing.

The main thread also watches for the end: the daemon gone (its process exited, or silent for
the parent timeout) or a SIGTERM/SIGINT/SIGHUP. Then, before exiting, it aborts the call in
flight and commands the lasers safe (see safe_exit.py): nobody else can after that.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from stedloop import __version__
from stedloop.driver import AcquireRequest, Driver, OverviewDriver, OverviewRequest
from stedloop.errors import ConfigError, DriverError
from stedloop.logs import configure_logging, get_logger
from stedloop.params import SafetyCaps
from stedloop.worker import protocol
from stedloop.worker.safe_exit import abort_and_make_safe

log = get_logger("stedloop.worker.process")

#: Exit codes of the worker process.
EXIT_OK = 0
EXIT_PARENT_LOST = 4
EXIT_BAD_START = 5
#: After SIGTERM, SIGINT or SIGHUP the worker exits with 128 + the signal number, as a shell
#: reports a process killed by that signal -- but only once the lasers were made safe.
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")

#: How often the main thread checks that its parent process is still there. Cheap (one
#: getppid), and it bounds how long an orphaned worker keeps a frame running.
PARENT_CHECK_INTERVAL_S = 0.1

#: Name prefix of the daemon's private folders for ipc sockets (see link.py).
IPC_FOLDER_PREFIX = "stedloop-worker-"


def _build_driver(spec: dict[str, Any]) -> Driver:
    """The configured driver, built exactly as the daemon would build it in-process."""
    from stedloop.drivers import driver_class, parse_driver_options

    name = str(spec["driver"])
    cls = driver_class(name)
    options = parse_driver_options(cls, name, dict(spec.get("options", {})))
    if not isinstance(spec.get("caps"), dict):  # never fall back to default caps
        raise ConfigError("the worker's init carries no safety caps; the driver is not built")
    driver: Driver = cls(options, SafetyCaps.model_validate(spec["caps"]))
    return driver


class _DriverThread:
    """Runs driver calls one at a time and sends each reply to the daemon itself.

    It has its own socket to the daemon (routing id: the token + ``REPLY_SUFFIX``), so a
    frame goes straight from this thread to the daemon without waking the main thread.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], address: str, token: str) -> None:
        self._jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._context = context
        self._address = address
        self._routing_id = (token + protocol.REPLY_SUFFIX).encode("ascii")
        self.driver: Driver | None = None
        #: True after a successful ``close``: the daemon made the lasers safe and let go of
        #: the instrument, so an exit must not open it again for a last safe_state.
        self.driver_closed = False
        self._lock = threading.Lock()
        self.busy_method: str | None = None
        self.busy_since = 0.0
        self.calls_done = 0
        self._thread = threading.Thread(target=self._run, name="driver", daemon=True)
        self._thread.start()

    def submit(self, header: dict[str, Any]) -> bool:
        """Queue a call; False if one is already running (calls never overlap)."""
        with self._lock:
            if self.busy_method is not None:
                return False
            self.busy_method = str(header.get("method"))
            self.busy_since = time.monotonic()
        self._jobs.put(header)
        return True

    def status(self) -> dict[str, Any]:
        with self._lock:
            busy = self.busy_method
            busy_for_s = time.monotonic() - self.busy_since if busy else 0.0
            return {"busy": busy, "busy_for_s": busy_for_s, "calls_done": self.calls_done}

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        out = self._context.socket(zmq.DEALER)
        out.linger = 0
        out.routing_id = self._routing_id
        out.connect(self._address)
        while (job := self._jobs.get()) is not None:
            parts = self._execute(job)
            with self._lock:
                self.busy_method = None
                self.calls_done += 1
            out.send_multipart(parts, copy=False)
        out.close()

    def _execute(self, job: dict[str, Any]) -> list[Any]:
        method = job.get("method")
        reply: dict[str, Any] = {"type": "reply", "id": job.get("id"), "ok": True}
        buffers: list[Any] = []
        try:
            result, buffers = self._call(str(method), job.get("args") or {})
            reply["result"] = result
        except BaseException as exc:  # every failure goes back to the daemon, typed
            reply = {
                "type": "reply",
                "id": job.get("id"),
                "ok": False,
                "error": protocol.error_to_dict(exc),
            }
            buffers = []
            if not isinstance(exc, Exception):
                raise
        return [protocol.encode_header(reply), *buffers]

    def _call(self, method: str, args: dict[str, Any]) -> tuple[Any, list[Any]]:
        if method == "init":
            self.driver = _build_driver(args)
            self.driver_closed = False
            return {"driver": str(args["driver"]), "pid": os.getpid()}, []
        driver = self.driver
        if driver is None:
            raise DriverError("the worker has no driver yet (init was not called)")
        if method == "connect":
            driver.connect()
            self.driver_closed = False
        elif method == "describe":
            return driver.describe().as_dict(), []
        elif method == "acquire":
            frame = driver.acquire(AcquireRequest.from_dict(args))
            header, buffers = protocol.encode_frame(frame)
            return header, buffers
        elif method == "acquire_overview":
            if not isinstance(driver, OverviewDriver):
                raise DriverError(f"the {type(driver).__name__} driver takes no overviews")
            overview = driver.acquire_overview(OverviewRequest.from_dict(args))
            return protocol.encode_overview(overview)
        elif method == "safe_state":
            driver.safe_state()
        elif method == "close":
            driver.close()
            self.driver_closed = True
        else:
            raise protocol.ProtocolError(f"unknown worker call {method!r}")
        return None, []

    def request_abort(self) -> None:
        driver = self.driver
        if driver is None:
            return
        try:
            driver.request_abort()
        except Exception as exc:  # e.g. the connection just dropped: safe_state must still come
            log.warning("worker_abort_failed", error=f"{type(exc).__name__}: {exc}")


class WorkerLoop:
    """The main thread: socket I/O, heartbeats, pings, aborts and watching the parent."""

    def __init__(
        self,
        address: str,
        token: str,
        parent_pid: int | None,
        heartbeat_interval_s: float,
        parent_timeout_s: float,
        abort_grace_period_s: float = 2.0,
        call_timeout_s: float = 30.0,
    ) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.routing_id = token.encode("ascii")
        self.socket.connect(address)
        self.address = address
        self.driver_thread = _DriverThread(self.context, address, token)
        self.parent_pid = parent_pid
        self.heartbeat_interval_s = heartbeat_interval_s
        self.parent_timeout_s = parent_timeout_s
        #: How long an exit waits for an aborted call to return, then for safe_state.
        self.abort_grace_period_s = abort_grace_period_s
        self.call_timeout_s = call_timeout_s
        #: Set by a stop signal's handler; the signal also wakes the poll (set_wakeup_fd).
        self.stop_signal: int | None = None
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self.heartbeat_seq = 0
        #: calls_done when an abort arrived; the abort is repeated until that call ends,
        #: because a driver clears its abort flag when acquire starts (the abort may have
        #: overtaken the start of the call).
        self.abort_for_call: int | None = None

    def _send(self, header: dict[str, Any]) -> None:
        # Never block on a daemon that is gone: the parent checks must keep running.
        with contextlib.suppress(zmq.Again):
            self.socket.send(protocol.encode_header(header), zmq.NOBLOCK)

    def _heartbeat(self) -> None:
        self.heartbeat_seq += 1
        self._send(
            {
                "type": "heartbeat",
                "seq": self.heartbeat_seq,
                "pid": os.getpid(),
                **self.driver_thread.status(),
            }
        )

    def _remove_socket_folder(self) -> None:
        """The daemon died without cleaning up: remove its private ipc folder for it."""
        if not self.address.startswith("ipc://"):
            return
        folder = Path(self.address[len("ipc://") :]).parent
        if folder.name.startswith(IPC_FOLDER_PREFIX):
            shutil.rmtree(folder, ignore_errors=True)

    def _parent_gone(self, last_seen: float) -> str | None:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            return "parent process exited"
        if time.monotonic() - last_seen > self.parent_timeout_s:
            return f"no message from the daemon for {self.parent_timeout_s:g} s"
        return None

    def stop_on_signals(self) -> None:
        """SIGTERM, SIGINT and SIGHUP end the loop through the safe exit (main thread only)."""

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            self.stop_signal = signum

        signal.set_wakeup_fd(self._wake_writer.fileno(), warn_on_full_buffer=False)
        for name in STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                signal.signal(signum, on_signal)

    def run(self) -> int:
        self._send(
            {
                "type": "hello",
                "protocol": protocol.PROTOCOL_VERSION,
                "pid": os.getpid(),
                "python": sys.version.split()[0],
                "stedloop": __version__,
            }
        )
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self._wake_reader, zmq.POLLIN)
        last_seen = time.monotonic()
        next_heartbeat = time.monotonic()
        next_parent_check = time.monotonic()
        while True:
            if self.stop_signal is not None:
                name = signal.Signals(self.stop_signal).name
                return self._exit_safely(f"got {name}", 128 + self.stop_signal)
            now = time.monotonic()
            if now >= next_parent_check:
                reason = self._parent_gone(last_seen)
                if reason:
                    code = self._exit_safely(reason, EXIT_PARENT_LOST)
                    self._remove_socket_folder()
                    return code
                next_parent_check = now + PARENT_CHECK_INTERVAL_S
            if now >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = now + self.heartbeat_interval_s
            wake_at = min(next_heartbeat, next_parent_check)
            timeout_ms = max(0, int((wake_at - time.monotonic()) * 1000)) + 1
            if self.abort_for_call is not None:
                status = self.driver_thread.status()
                if status["busy"] and status["calls_done"] == self.abort_for_call:
                    self.driver_thread.request_abort()
                    timeout_ms = min(timeout_ms, 20)
                else:
                    self.abort_for_call = None
            events = dict(poller.poll(timeout_ms))
            if self._wake_reader in events:
                with contextlib.suppress(OSError):
                    self._wake_reader.recv(64)
            if self.socket not in events:
                continue
            while True:
                try:
                    parts = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                last_seen = time.monotonic()
                try:
                    header = protocol.decode_header(parts[0].buffer)
                except protocol.ProtocolError as exc:
                    log.error("worker_bad_message", error=str(exc))
                    continue
                if self._handle(header) is False:
                    return self._exit_on_shutdown()

    def _exit_on_shutdown(self) -> int:
        """The daemon asked us to exit: at once, unless a driver call is still running."""
        if self.driver_thread.status()["busy"] is None:
            return EXIT_OK
        return self._exit_safely("shutdown during a driver call", EXIT_OK)

    def _exit_safely(self, reason: str, code: int) -> int:
        """Abort the call in flight and command the lasers safe; the exit code to use."""
        log.warning("worker_exiting", reason=reason, pid=os.getpid())
        self.driver_thread.stop()  # no further call starts after the one in flight
        done = abort_and_make_safe(
            self.driver_thread, self.abort_grace_period_s, self.call_timeout_s
        )
        safe = done.safe_state == "done" or done.safe_state.startswith("skipped")
        (log.warning if safe else log.error)(
            "worker_exit_safe_state", reason=reason, pid=os.getpid(), **done.as_log()
        )
        return code

    def _handle(self, header: dict[str, Any]) -> bool:
        kind = header["type"]
        if kind == "call":
            if header.get("method") not in protocol.CALL_METHODS:
                self._reply_error(header, f"unknown worker call {header.get('method')!r}")
            elif not self.driver_thread.submit(header):
                busy = self.driver_thread.status()["busy"]
                self._reply_error(header, f"the driver worker is busy with {busy}")
        elif kind == "abort":
            self.driver_thread.request_abort()
            status = self.driver_thread.status()
            if status["busy"]:
                self.abort_for_call = status["calls_done"]
            self._send({"type": "abort_ack", **self.driver_thread.status()})
        elif kind == "ping":
            self._send({"type": "pong", "id": header.get("id"), **self.driver_thread.status()})
        elif kind == "shutdown":
            return False
        elif kind != "keepalive":
            log.warning("worker_unknown_message", type=kind)
        return True

    def _reply_error(self, header: dict[str, Any], message: str) -> None:
        self._send(
            {
                "type": "reply",
                "id": header.get("id"),
                "ok": False,
                "error": {"type": "DriverError", "message": message},
            }
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stedloop.worker",
        description="stedloop driver worker (started by the daemon)",
    )
    parser.add_argument("--connect", required=True, help="ZeroMQ address of the daemon's socket")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--heartbeat-interval-s", type=float, default=0.5)
    parser.add_argument("--parent-timeout-s", type=float, default=15.0)
    parser.add_argument("--abort-grace-period-s", type=float, default=2.0)
    parser.add_argument("--call-timeout-s", type=float, default=30.0)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    # A short GIL switch interval lets the main thread answer pings and aborts within a
    # millisecond even while the driver thread runs Python code (the default is 5 ms).
    sys.setswitchinterval(0.0005)
    configure_logging(args.log_level, json_stderr=True)
    token = sys.stdin.readline().strip()
    if not token or not token.isalnum():
        log.error("worker_no_token", hint="the first line on stdin must be the daemon's token")
        return EXIT_BAD_START
    loop = WorkerLoop(
        args.connect,
        token,
        args.parent_pid,
        args.heartbeat_interval_s,
        args.parent_timeout_s,
        args.abort_grace_period_s,
        args.call_timeout_s,
    )
    loop.stop_on_signals()
    code = loop.run()
    # The driver thread may be stuck in a hung call; exit without waiting for it.
    sys.stderr.flush()
    os._exit(code)
