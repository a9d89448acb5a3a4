"""Events: numbered, kept in a bounded buffer for catch-up, and published on a PUB socket.

Any thread may ``publish``; a sequence number is assigned under a lock, so the buffer and
the PUB stream carry events in strictly increasing ``seq`` order with no gaps. Only the
publisher thread touches the PUB socket (ZeroMQ sockets are not thread-safe).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Any

import zmq

from stedloop.events import TOPICS as EVENT_TOPICS
from stedloop.logs import get_logger
from stedloop.wire.protocol import encode

TOPICS = EVENT_TOPICS
_STOP = object()

log = get_logger(__name__)


class EventBus:
    """Numbered events for one daemon run; ``boot_id`` tells runs apart (seq restarts at 1)."""

    def __init__(self, boot_id: str, buffer_size: int = 10_000) -> None:
        self.boot_id = boot_id
        self._lock = threading.Lock()
        self._seq = 0
        self._buffer: deque[dict[str, Any]] = deque(maxlen=buffer_size)
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def last_seq(self) -> int:
        return self._seq

    def publish(self, topic: str, data: dict[str, Any], session_id: str | None = None) -> int:
        """Number, buffer and queue one event for the PUB socket; returns its ``seq``."""
        if topic not in TOPICS:
            raise ValueError(f"unknown event topic {topic!r}")
        with self._lock:
            self._seq += 1
            event: dict[str, Any] = {
                "seq": self._seq,
                "topic": topic,
                "time_s": time.time(),
                "session_id": session_id,
                "boot_id": self.boot_id,
                "data": data,
            }
            self._buffer.append(event)
            self._outbox.put(event)
        return int(event["seq"])

    def since(self, seq: int, limit: int = 1000) -> dict[str, Any]:
        """Buffered events with a number above ``seq`` (oldest first, at most ``limit``)."""
        with self._lock:
            first = self._buffer[0]["seq"] if self._buffer else self._seq + 1
            # Events are numbered consecutively, so the start is found by arithmetic.
            start = max(0, seq + 1 - first)
            events = [self._buffer[i] for i in range(start, min(len(self._buffer), start + limit))]
            last = self._seq
        return {
            "events": events,
            "last_seq": last,
            "first_available_seq": first,
            "missed": max(0, first - seq - 1),  # events gone from the buffer before `first`
            "more": bool(events) and events[-1]["seq"] < last,
            "boot_id": self.boot_id,
        }

    def start_publisher(self, pub: zmq.Socket[bytes]) -> None:
        """Hand the (bound) PUB socket to the publisher thread, which owns it from now on."""
        self._thread = threading.Thread(
            target=self._run_publisher, args=(pub,), name="stedloop-publisher", daemon=True
        )
        self._thread.start()

    def stop_publisher(self, timeout_s: float = 2.0) -> None:
        """Send what is queued, then stop (the publisher closes its socket)."""
        if self._thread is None:
            return
        self._outbox.put(_STOP)
        self._thread.join(timeout_s)
        self._thread = None

    def _run_publisher(self, pub: zmq.Socket[bytes]) -> None:
        try:
            while True:
                event = self._outbox.get()
                if event is _STOP:
                    break
                try:
                    pub.send_multipart([event["topic"].encode(), encode(event)])
                except zmq.ZMQError as exc:  # keep publishing; the buffer still has it
                    log.warning("event_publish_failed", seq=event["seq"], error=str(exc))
        finally:
            pub.close(linger=500)
