"""``stedloop serve``: the long-running process that owns the instrument and serves sessions.

Two processes: this one answers requests and publishes events; its session engine
(engine.py, a child process) holds the driver and the quality model and runs the sessions, so
that the session's compute never competes with the request loop for an interpreter.

Life of the process:
1. claim the instrument, start the engine with the claim's descriptor: it connects the driver
   and puts it in its safe state (before anything else touches it);
2. note interrupted sessions (ledger without a stopped/finished event) for ``status``;
3. bind the ROUTER (requests) and PUB (events) sockets, loopback unless CURVE is on;
4. tell systemd READY=1, then answer requests in one loop that never waits for hardware;
5. on SIGTERM/SIGINT/SIGBREAK: the engine stops the session (finish the frame within the
   grace period, else abort it), makes the lasers safe and closes the driver; exit 0.

If the engine dies, its session is reported failed and a fresh engine is started (which
connects the driver and makes it safe again); if the daemon dies, the engine exits too
(see engine.py for how the lasers are left safe).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import zmq

from stedloop import __version__
from stedloop.config import LoadedConfig
from stedloop.errors import ConfigError
from stedloop.events import Log
from stedloop.instrument import InstrumentClaim, claim_instrument
from stedloop.logs import get_logger
from stedloop.paths import data_dir
from stedloop.server.engine_link import EngineLink
from stedloop.server.events import EventBus
from stedloop.server.handlers import METHODS, validate_params
from stedloop.server.replies import ReplyCache, client_scope, fingerprint
from stedloop.server.sdnotify import Notifier
from stedloop.server.sessions import SessionHost
from stedloop.wire.addresses import check_address
from stedloop.wire.protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    decode_request,
    encode,
    error_reply,
    ok_reply,
    split_envelope,
)
from stedloop.wire.security import (
    check_binding,
    keys_dir_of,
    load_server_keys,
    make_server_socket,
    start_authenticator,
)

if TYPE_CHECKING:
    from zmq.auth.thread import ThreadAuthenticator

log = get_logger(__name__)

#: How often the loop wakes without traffic (signals, watchdog), in ms.
POLL_MS = 100
#: Delays before each attempt to replace a session engine that died (the first at once: the
#: fresh engine makes the lasers safe).
ENGINE_RESTART_DELAYS_S = (0.0, 1.0, 5.0)
#: ZeroMQ drops (disconnects) peers sending more than this multiple of the cap; up to it,
#: an oversized message gets a ``too_large`` reply.
HARD_CAP_FACTOR = 4


@dataclass(frozen=True)
class Endpoints:
    request_address: str
    event_address: str


class Daemon:
    def __init__(
        self, loaded: LoadedConfig, ready_file: Path | None = None, share_driver: bool = False
    ) -> None:
        self.loaded = loaded
        self.share_driver = share_driver  # run even if another process holds the instrument
        self._claim: InstrumentClaim | None = None
        self.engine: EngineLink | None = None
        self._stopping = threading.Event()  # set once the daemon shuts down
        self.config = loaded.config
        self.ready_file = ready_file
        self.boot_id = uuid.uuid4().hex[:12]
        self.started_at_s = time.time()
        self.bus = EventBus(self.boot_id, self.config.daemon.event_buffer_size)
        self.cache = ReplyCache(self.config.daemon.reply_cache_size)
        self.notifier = Notifier()
        self._stop_signal: str | None = None
        self._signals_seen = 0
        self.endpoints: Endpoints | None = None
        self.curve = False
        self.host: SessionHost | None = None
        #: The quality model's state, as the engine (which loads it) last reported it.
        self.scorer_state: dict[str, Any] = {"state": "idle"}
        self.driver_info: dict[str, Any] = {}

    # -- start-up -------------------------------------------------------------------------
    def _open_driver(self) -> None:
        """Claim the instrument, then start the engine, which opens the driver (safe first)."""
        self._claim = claim_instrument(self.config, "`stedloop serve`", share=self.share_driver)
        try:
            self.engine = self._start_engine()
        except BaseException:
            self._close_driver()
            raise

    def _start_engine(self) -> EngineLink:
        assert self._claim is not None
        engine = EngineLink(
            self.loaded,
            on_message=self._on_engine_message,
            on_exit=self._on_engine_exit,
            inherit_fds=self._claim.inheritable_fds(),
        )
        ready = engine.start()
        self.driver_info = dict(ready["driver"])
        self.scorer_state = dict(ready["scorer"])
        log.info(
            "driver_safe",
            driver=self.driver_info.get("name"),
            in_worker=self.config.driver.in_worker,
            engine_pid=engine.pid,
        )
        return engine

    def _on_engine_message(self, kind: str, body: dict[str, Any]) -> None:
        """The engine's messages, in order, from its link's reader thread."""
        if kind == "scorer":
            self.scorer_state = dict(body["snapshot"])
        elif kind == "fault":
            self._on_worker_fault(str(body["fault"]), dict(body["info"]))
        elif self.host is not None:
            self.host.on_engine_message(kind, body)

    def _on_engine_exit(self, exit_code: int | None) -> None:
        """The engine exited on its own: fail its session, start a fresh one (whose driver
        is connected and made safe again) in the background."""
        log.error("engine_exited", exit_code=exit_code)
        self.engine = None
        fault = Log(level="error", message=f"the session engine exited (code {exit_code})")
        self.bus.publish("log", fault.to_wire(), session_id=None)
        if self.host is not None:
            self.host.engine_lost(exit_code)
        if not self._stopping.is_set():
            threading.Thread(
                target=self._restart_engine, name="engine-restart", daemon=True
            ).start()

    def _restart_engine(self) -> None:
        for attempt, delay_s in enumerate(ENGINE_RESTART_DELAYS_S, start=1):
            time.sleep(delay_s)
            if self._stopping.is_set():
                return
            try:
                engine = self._start_engine()
                break
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.error("engine_restart_failed", error=error, attempt=attempt)
        else:
            if self.host is not None:
                self.host.engine_replaced(None, error)
            return
        if self._stopping.is_set():
            engine.shutdown(0.0)
            return
        self.engine = engine
        log.info("engine_restarted", pid=engine.pid)
        if self.host is not None:
            self.host.engine_replaced(engine)

    def _on_worker_fault(self, kind: str, info: dict[str, Any]) -> None:
        """A driver-worker fault the engine reported (it paused the session itself)."""
        log.error("driver_worker_fault", fault=kind, **info)
        fault = Log(level="error", fault=kind, message=f"driver worker fault: {kind}")
        self.bus.publish("log", {**fault.to_wire(), **info}, session_id=None)

    def _check_security(self) -> tuple[bytes, bytes] | None:
        """Loopback, or CURVE with keys: checked first; returns the server keys if CURVE."""
        section = self.config.daemon
        keys_dir = keys_dir_of(self.loaded)
        self.curve = keys_dir is not None
        for address in (section.request_address, section.event_address):
            check_address(address, bind=True)
        check_binding([section.request_address, section.event_address], self.curve)
        return load_server_keys(keys_dir) if keys_dir is not None else None

    def _bind(
        self, context: zmq.Context[zmq.Socket[bytes]], server_keys: tuple[bytes, bytes] | None
    ) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes], ThreadAuthenticator | None]:
        section = self.config.daemon
        keys_dir = keys_dir_of(self.loaded)
        auth = start_authenticator(context, keys_dir) if keys_dir is not None else None
        router = make_server_socket(context, zmq.ROUTER, server_keys)
        router.setsockopt(zmq.MAXMSGSIZE, section.max_message_bytes * HARD_CAP_FACTOR)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.SNDHWM, 10_000)
        pub = make_server_socket(context, zmq.PUB, server_keys)
        pub.setsockopt(zmq.SNDHWM, 100_000)
        for socket, address in ((router, section.request_address), (pub, section.event_address)):
            try:
                socket.bind(address)
            except zmq.ZMQError as exc:
                router.close(0)
                pub.close(0)
                if auth is not None:
                    auth.stop()
                raise ConfigError(
                    f"cannot bind {address}: {exc}; is another daemon running there? "
                    "Choose another port in daemon.request_address / daemon.event_address"
                ) from None
        self.endpoints = Endpoints(
            request_address=router.getsockopt_string(zmq.LAST_ENDPOINT),
            event_address=pub.getsockopt_string(zmq.LAST_ENDPOINT),
        )
        return router, pub, auth

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        names = ["SIGTERM", "SIGINT", "SIGBREAK"]  # SIGBREAK: Ctrl+Break / service stop on Windows
        for name in names:
            number = getattr(signal, name, None)
            if number is not None:
                signal.signal(number, self._on_signal)

    def _on_signal(self, number: int, _frame: FrameType | None) -> None:
        self._signals_seen += 1
        self._stop_signal = signal.Signals(number).name
        if self._signals_seen > 1 and self.host is not None:
            # A second signal: do not wait for the frame in flight.
            self.host.abort_current()

    def _write_ready_file(self) -> None:
        if self.ready_file is None or self.endpoints is None:
            return
        import json

        tmp = self.ready_file.with_suffix(self.ready_file.suffix + ".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "boot_id": self.boot_id,
                    "request_address": self.endpoints.request_address,
                    "event_address": self.endpoints.event_address,
                    "curve": self.curve,
                }
            )
        )
        tmp.replace(self.ready_file)

    # -- the loop -------------------------------------------------------------------------
    def serve(self) -> int:
        """Run until a stop signal; returns the exit code (0 after a clean stop)."""
        # Short GIL switch interval: the loop answers within ~1 ms even while the engine's
        # reader thread and the publisher run Python code (the default is 5 ms).
        sys.setswitchinterval(0.0005)
        from stedloop.store import SessionStore

        server_keys = self._check_security()  # refuse a bad binding before touching hardware
        self._open_driver()
        context = zmq.Context()
        try:
            root = data_dir(self.config.store.data_dir)
            store = SessionStore(root / "sessions")
            self.host = SessionHost(self.loaded, self.engine, store, self.bus)
            self.store = store
            interrupted = self.host.find_interrupted()
            if interrupted:
                log.warning("interrupted_sessions", sessions=interrupted)
            router, pub, auth = self._bind(context, server_keys)
        except BaseException:
            self._close_driver()
            context.term()
            raise
        self.bus.start_publisher(pub)
        self._install_signals()
        assert self.endpoints is not None
        self._write_ready_file()
        self.notifier.ready(f"serving on {self.endpoints.request_address}")
        log.info(
            "daemon_ready",
            request_address=self.endpoints.request_address,
            event_address=self.endpoints.event_address,
            curve=self.curve,
            pid=os.getpid(),
            boot_id=self.boot_id,
        )
        for session_id in interrupted:
            note = Log(level="warning", message="interrupted session can be resumed")
            self.bus.publish("log", note.to_wire(), session_id=session_id)
        try:
            self._loop(router)
        finally:
            self._shutdown(router, auth, context)
        return 0

    def _loop(self, router: zmq.Socket[bytes]) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        while self._stop_signal is None:
            events = dict(poller.poll(POLL_MS))
            if router in events:
                # Drain what is queued so a burst is answered without extra polls.
                for _ in range(1000):
                    try:
                        message = router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    # With CURVE, the handshake proved the sender's public key: ZAP hands it
                    # over as the message's User-Id.
                    user_id = message[-1].get("User-Id") if self.curve else None
                    curve_key = user_id if isinstance(user_id, str) and user_id else None
                    self._answer(router, [frame.bytes for frame in message], curve_key)
            self.notifier.watchdog_due()

    def _answer(
        self, router: zmq.Socket[bytes], frames: list[bytes], curve_key: str | None
    ) -> None:
        identity, rest = frames[0], frames[1:]
        envelope, payload = split_envelope(rest)
        if len(payload) != 1:
            reply = encode(
                error_reply(
                    None, "bad_request", f"expected one JSON frame, got {len(payload)} frames"
                )
            )
        else:
            reply = self.handle(payload[0], identity, curve_key)
        try:
            router.send_multipart([identity, *envelope, reply], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the peer is gone or too slow; it can ask again
            log.debug("reply_dropped", error=str(exc))

    def handle(
        self, payload: bytes, routing_id: bytes = b"", curve_key: str | None = None
    ) -> bytes:
        """One request message in, one encoded reply out. Never raises.

        ``routing_id`` is the sender's ZeroMQ connection and ``curve_key`` its CURVE public
        key: with the request's ``client_id`` they make the scope in which its request id and
        idempotency key mean something (``client_scope``)."""
        request_id: Any = None
        cache_key: tuple[Any, str] | None = None
        try:
            request = decode_request(payload, self.config.daemon.max_message_bytes)
            request_id = request.id
            params = validate_params(request.method, request.params, request_id)
            method = METHODS[request.method]
            scope = client_scope(curve_key, request.client_id, routing_id)
            if method.mutating:
                print_ = fingerprint(request.method, request.params)
                cached = self.cache.lookup(scope, request_id, print_)
                if cached is False:
                    raise ProtocolError(
                        "conflict",
                        f"request id {request_id!r} was already used for a different request; "
                        "use a fresh id (a UUID) per request",
                        request_id,
                    )
                if isinstance(cached, bytes):
                    return cached
                cache_key = (request_id, print_)
            result = method.handler(self, params, scope)
            reply = encode(ok_reply(request_id, result))
            if cache_key is not None:
                self.cache.store(scope, cache_key[0], cache_key[1], reply)
            return reply
        except ProtocolError as exc:
            echo = exc.request_id if exc.request_id is not None else request_id
            return encode(error_reply(echo, exc.code, exc.message))
        except Exception as exc:  # a bug: log it, answer, keep serving
            log.exception("request_failed", request_id=request_id)
            return encode(
                error_reply(request_id, "internal", f"{type(exc).__name__}: {exc} (see log)")
            )

    def status(self) -> dict[str, Any]:
        assert self.host is not None and self.endpoints is not None
        return {
            "daemon": {
                "version": __version__,
                "protocol": PROTOCOL_VERSION,
                "pid": os.getpid(),
                "boot_id": self.boot_id,
                "uptime_s": round(time.time() - self.started_at_s, 3),
                "request_address": self.endpoints.request_address,
                "event_address": self.endpoints.event_address,
                "curve": self.curve,
                "engine_pid": self.engine.pid if self.engine is not None else None,
            },
            "driver": self.driver_info,
            "scorer": self.scorer_state,
            "session": self.host.snapshot(),
            "interrupted": list(self.host.interrupted),
            "last_seq": self.bus.last_seq,
        }

    def _close_driver(self, grace_s: float = 0.0) -> None:
        """The engine stops the session (``grace_s`` for the frame in flight), puts the lasers
        in the safe state and closes the driver; then the claim is released. Never raises."""
        self._stopping.set()
        engine, self.engine = self.engine, None
        try:
            if engine is not None:
                if engine.shutdown(grace_s):
                    log.info("driver_safe", reason="shutdown")
                else:
                    log.error("driver_close_unconfirmed", engine_pid=engine.pid)
        except Exception:
            log.exception("driver_close_failed")
        finally:
            if self._claim is not None:
                self._claim.release()
                self._claim = None

    # -- shutdown -------------------------------------------------------------------------
    def _shutdown(
        self,
        router: zmq.Socket[bytes],
        auth: ThreadAuthenticator | None,
        context: zmq.Context[zmq.Socket[bytes]],
    ) -> None:
        reason = self._stop_signal or "loop ended"
        log.info("daemon_stopping", reason=reason)
        self.notifier.stopping()
        self._close_driver(self.config.daemon.shutdown_grace_s)
        self.bus.stop_publisher()
        router.close(0)
        if auth is not None:
            auth.stop()
        context.term()
        log.info("daemon_stopped", reason=reason)
