"""systemd's notify protocol, done by hand: one datagram to ``$NOTIFY_SOCKET``.

With ``Type=notify`` systemd waits for ``READY=1`` before it calls the service started, and
with ``WatchdogSec=`` it kills and restarts the service unless ``WATCHDOG=1`` arrives in time.
The daemon sends the watchdog ping from its request loop, so a wedged loop is restarted.
Outside systemd (no ``$NOTIFY_SOCKET``, or not on a Unix) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace socket (Linux)
            address = "\0" + address[1:]
        self._address = address if hasattr(socket, "AF_UNIX") else ""
        watchdog_us = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        enabled = watchdog_us.isdigit() and (not watchdog_pid or watchdog_pid == str(os.getpid()))
        # Ping at half the period systemd allows, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval_s = int(watchdog_us) / 2e6 if enabled else None
        self._last_ping_s = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines; returns whether a datagram was sent."""
        if not self._address:
            return False
        message = "\n".join(assignments).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(self._address)
                sock.sendall(message)
            except OSError:
                return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog_due(self, now_s: float | None = None) -> bool:
        """Ping the watchdog if half its period has passed; call this from the main loop."""
        if self.watchdog_interval_s is None:
            return False
        now_s = time.monotonic() if now_s is None else now_s
        if now_s - self._last_ping_s < self.watchdog_interval_s:
            return False
        self._last_ping_s = now_s
        return self.notify("WATCHDOG=1")
