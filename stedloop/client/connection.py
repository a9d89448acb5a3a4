"""What a client socket's connection is doing, from ZeroMQ's monitor events.

ZeroMQ reconnects silently, so "no reply yet" looks the same whether the daemon is thinking,
absent, or refusing our keys. The monitor tells them apart: a refused TCP connection means
nothing listens there, and a failed handshake means a key or security mismatch. Either is
answered at once instead of after the whole timeout.
"""

from __future__ import annotations

import contextlib
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

#: Connections refused for this long, with none accepted, mean no daemon listens there (a
#: daemon that is just restarting gets this moment to bind).
REFUSED_GIVE_UP_S = 1.0

_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class ConnectionWatch:
    """Follows one socket's connection; ``problem()`` says why no reply can come, if known."""

    def __init__(self, socket: zmq.Socket[bytes], address: str, curve: bool) -> None:
        self._socket = socket
        self._address = address
        self._curve = curve
        self.monitor = socket.get_monitor_socket(_EVENTS)
        self._refused_since: float | None = None
        self._handshake_failure: str | None = None

    def update(self) -> None:
        """Read the events that have arrived (never waits)."""
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)["event"]
            if event == zmq.EVENT_CONNECT_RETRIED:
                if self._refused_since is None:
                    self._refused_since = time.monotonic()
            elif event in (zmq.EVENT_CONNECTED, zmq.EVENT_HANDSHAKE_SUCCEEDED):
                self._refused_since = None
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._handshake_failure = (
                    f"the daemon at {self._address} refused this client's CURVE key: its "
                    "public key is not in the daemon's authorized_clients folder"
                )
            elif event in (
                zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
            ):
                # Which of the two arrives depends on which end gives up first.
                hint = (
                    "check that server.key is the daemon's"
                    if self._curve
                    else "this client has no CURVE keys: pass --keys DIR"
                )
                self._handshake_failure = (
                    f"the ZeroMQ handshake with {self._address} failed: CURVE is on at one end "
                    f"only, or the keys do not match, or it is not a stedloop daemon ({hint})"
                )

    def problem(self, final: bool = False) -> str | None:
        """Why no reply will come, when that is already known. ``final``: the wait is over,
        so connections refused until now (however briefly) are the reason."""
        self.update()
        if self._handshake_failure is not None:
            return self._handshake_failure
        if self._refused_since is not None and (
            final or time.monotonic() - self._refused_since >= REFUSED_GIVE_UP_S
        ):
            return (
                f"no reply from the daemon at {self._address}: nothing is listening there "
                "(connection refused); is `stedloop serve` running, on that address?"
            )
        return None

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):  # the socket may be closed already
            self._socket.disable_monitor()
        self.monitor.close(0)
