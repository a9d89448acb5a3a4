"""Talk to a stedloop daemon: requests with retries, and events without gaps or repeats.

``Client.call`` sends one request on a DEALER socket (framed like a REQ socket, so the daemon
sees the same thing from both) and waits for the reply with the same id, ``timeout_s`` in
all. Part way it sends the *same* request again (same id, same ``client_id``): the daemon
answers a repeated state-changing request from its reply cache, so a retry never starts a
second session. Request ids are scoped by the client's ``client_id``, a random secret made
for each ``Client``: another client reusing an id never gets this client's replies.
When nothing listens at the address, or the handshake fails, it says so at once.

A ``Client`` is not thread-safe; use one per thread.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

from stedloop.client.connection import ConnectionWatch
from stedloop.errors import ParameterRejected, StedloopError
from stedloop.wire.addresses import check_address
from stedloop.wire.protocol import PROTOCOL_VERSION
from stedloop.wire.security import CurveKeys, load_client_keys


class DaemonError(StedloopError):
    """The daemon answered with an error; ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message


class DaemonUnreachable(DaemonError):
    """No reply within the timeout (daemon not running, wrong address, or wrong keys)."""


class DaemonBusy(DaemonError):
    """The daemon is not ready for this yet (e.g. the quality model is loading)."""


class RemoteParameterRejected(DaemonError, ParameterRejected):
    """Parameters or ranges beyond the daemon's safety caps."""


_ERRORS: dict[str, type[DaemonError]] = {
    "busy": DaemonBusy,
    "param_rejected": RemoteParameterRejected,
}


def error_for(code: str, message: str) -> DaemonError:
    return _ERRORS.get(code, DaemonError)(code, message)


class Client:
    def __init__(
        self,
        address: str,
        timeout_s: float = 10.0,
        curve: CurveKeys | Path | None = None,
        retries: int = 1,
    ) -> None:
        """``timeout_s``: how long one call waits for its reply, retries included (a daemon
        that is running but busy, e.g. loading its model on a loaded PC, gets that long; an
        address where nothing listens is reported after about a second either way);
        ``retries``: how often the request is resent within that time."""
        self.address = check_address(address, bind=False)
        self.timeout_s = timeout_s
        self.retries = retries
        self.curve = load_client_keys(Path(curve)) if isinstance(curve, (str, Path)) else curve
        # This client's secret: the daemon scopes request ids and idempotency keys by it, so
        # a retry after a reconnect still finds its reply and nobody else can.
        self.client_id = secrets.token_urlsafe(24)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._socket: zmq.Socket[bytes] | None = None
        self._watch: ConnectionWatch | None = None

    # -- requests -------------------------------------------------------------------------
    def _connect(self) -> zmq.Socket[bytes]:
        if self._socket is None:
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            if self.curve is not None:
                self.curve.apply(socket)
            self._watch = ConnectionWatch(socket, self.address, curve=self.curve is not None)
            socket.connect(self.address)
            self._socket = socket
        return self._socket

    def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        request_id: str | int | None = None,
    ) -> dict[str, Any]:
        """Send one request (resent with the same id part way through ``timeout_s``);
        return the raw reply."""
        request_id = uuid.uuid4().hex if request_id is None else request_id
        message = json.dumps(
            {
                "v": PROTOCOL_VERSION,
                "id": request_id,
                "client_id": self.client_id,
                "method": method,
                "params": params or {},
            }
        ).encode()
        socket = self._connect()
        watch = self._watch
        assert watch is not None
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(watch.monitor, zmq.POLLIN)
        started = time.monotonic()
        attempts = self.retries + 1
        problem = None
        for attempt in range(attempts):
            socket.send_multipart([b"", message])
            deadline = started + self.timeout_s * (attempt + 1) / attempts
            while (remaining_s := deadline - time.monotonic()) > 0 and problem is None:
                # Short polls: a refusal is judged by how long it lasted, not by new events.
                ready = dict(poller.poll(int(min(remaining_s, 0.25) * 1000) + 1))
                problem = watch.problem()
                if socket not in ready:
                    continue
                reply: dict[str, Any] = json.loads(socket.recv_multipart()[-1])
                if reply.get("id") == request_id:
                    return reply
                # A late reply to an earlier, timed-out request: not ours, drop it.
            if problem is not None:
                break
        problem = problem or watch.problem(final=True)
        self.close()  # forget queued messages; the next call reconnects
        raise DaemonUnreachable(
            "unreachable",
            problem
            or f"no reply from the daemon at {self.address} within {self.timeout_s:g} s; is "
            "`stedloop serve` running there (and, with CURVE, are the keys right)?",
        )

    def call(self, method: str, **params: Any) -> Any:
        """Call ``method``; return its result or raise the matching ``DaemonError``."""
        reply = self.request(method, params)
        if reply.get("ok"):
            return reply.get("result")
        error = reply.get("error") or {}
        raise error_for(str(error.get("code", "internal")), str(error.get("message", reply)))

    def call_when_ready(self, method: str, wait_s: float, **params: Any) -> Any:
        """``call``, asked again every half second while the daemon answers ``busy`` (its
        quality model still loading), for up to ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self.call(method, **params)
            except DaemonBusy:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def ping(self) -> float:
        """Round trip time of a ping, in seconds."""
        started = time.perf_counter()
        self.call("ping")
        return time.perf_counter() - started

    # -- events ---------------------------------------------------------------------------
    def _sub_socket(self, event_address: str) -> zmq.Socket[bytes]:
        socket = self._context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            self.curve.apply(socket)
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        socket.connect(event_address)
        return socket

    def subscribe(
        self, event_address: str, timeout_s: float | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Raw PUB stream: (topic, event) as published, from now on. May miss events (PUB
        drops while connecting); ``follow`` does not."""
        socket = self._sub_socket(event_address)
        try:
            while True:
                wait_ms = None if timeout_s is None else int(timeout_s * 1000)
                if not socket.poll(wait_ms, zmq.POLLIN):
                    return
                topic, body = socket.recv_multipart()[:2]
                yield topic.decode(), json.loads(body)
        finally:
            socket.close(0)

    def follow(
        self,
        event_address: str,
        since_seq: int | None = None,
        idle_s: float = 0.5,
        stop: threading.Event | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every event after ``since_seq`` (None: from now), in order, none missed or repeated.

        Subscribes first, then fills from ``events.since`` whatever the subscription did not
        deliver (before it was connected, or dropped): a gap in ``seq`` triggers a catch-up,
        and so does every ``idle_s`` without traffic. A daemon restart (new ``boot_id``)
        restarts the numbering. Events older than the daemon's buffer are reported by a
        synthetic ``{"topic": "gap", "missed": n}`` event, never silently skipped.
        ``stop``: when set, the iteration ends within ``idle_s`` even if no event comes.
        """
        socket = self._sub_socket(event_address)
        try:
            status = self.call("status")
            boot_id = status["daemon"]["boot_id"]
            last = status["last_seq"] if since_seq is None else since_seq
            while stop is None or not stop.is_set():
                for event in self._catch_up(last, boot_id):
                    if event.get("topic") == "gap":
                        yield event
                        continue
                    if event.get("boot_id") != boot_id:
                        continue
                    last = event["seq"]
                    yield event
                # Live events until a gap or a quiet moment.
                while socket.poll(int(idle_s * 1000), zmq.POLLIN):
                    body = socket.recv_multipart()[-1]
                    event = json.loads(body)
                    if event.get("boot_id") != boot_id:
                        boot_id, last = event.get("boot_id"), 0  # daemon restarted
                        break
                    if event["seq"] <= last:
                        continue  # already delivered by a catch-up
                    if event["seq"] != last + 1:
                        break  # missed something: catch up first
                    last = event["seq"]
                    yield event
        finally:
            socket.close(0)

    def _catch_up(self, last: int, boot_id: str) -> Iterator[dict[str, Any]]:
        while True:
            page = self.call("events.since", seq=last, limit=1000)
            if page["boot_id"] != boot_id:
                return
            if page["missed"]:
                yield {"topic": "gap", "missed": page["missed"], "seq": None}
            events = page["events"]
            yield from events
            if events:
                last = events[-1]["seq"]
            if not page["more"]:
                return

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
