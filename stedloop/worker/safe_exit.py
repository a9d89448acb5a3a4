"""What a worker does before it exits on its own: abort the frame, then make the lasers safe.

The worker exits without the daemon's say when the daemon is gone (its process exited, or it
sent nothing for the parent timeout) or when the worker itself gets SIGTERM, SIGINT or
SIGHUP; a ``shutdown`` that arrives during a driver call is handled the same way. Nobody can
make the lasers safe after that, so before exiting it:

1. asks the driver to abort the call in flight (its ``request_abort``), again
   every ``ABORT_REPEAT_S``: a driver clears its abort flag when a frame starts, and the abort
   may overtake the start of the call;
2. waits up to ``abort_wait_s`` for that call to return;
3. calls ``safe_state()`` -- also when the call is still running, because a driver that ignores
   aborts must not keep the lasers on -- unless the driver was closed (the daemon made it safe
   and closed it; nothing is on);
4. gives ``safe_state`` up to ``safe_state_wait_s`` in its own thread, so that one that hangs
   cannot keep an orphaned worker alive forever.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from stedloop.driver import Driver

#: How often the abort is repeated while the call in flight has not returned.
ABORT_REPEAT_S = 0.02


class DriverRunner(Protocol):
    """The worker's driver thread, as seen from here."""

    driver: Driver | None
    driver_closed: bool

    def status(self) -> dict[str, Any]: ...

    def request_abort(self) -> None: ...


@dataclass(frozen=True)
class SafeExit:
    """What was done, for the worker's last log line."""

    call_in_flight: str | None
    call_returned: bool
    safe_state: str  # done | failed: ... | still running after N s | skipped: ...
    took_s: float

    def as_log(self) -> dict[str, Any]:
        return {
            "call_in_flight": self.call_in_flight,
            "call_returned": self.call_returned,
            "safe_state": self.safe_state,
            "took_s": round(self.took_s, 3),
        }


def abort_and_make_safe(
    runner: DriverRunner, abort_wait_s: float, safe_state_wait_s: float
) -> SafeExit:
    started = time.monotonic()
    busy = runner.status()["busy"]
    returned = _abort_call_in_flight(runner, abort_wait_s) if busy else True
    outcome = _safe_state(runner, safe_state_wait_s)
    return SafeExit(busy, returned, outcome, time.monotonic() - started)


def _abort_call_in_flight(runner: DriverRunner, wait_s: float) -> bool:
    """Abort until the call returns or ``wait_s`` has passed; whether it returned."""
    deadline = time.monotonic() + wait_s
    while runner.status()["busy"]:
        if time.monotonic() >= deadline:
            return False
        runner.request_abort()
        time.sleep(ABORT_REPEAT_S)
    return True


def _safe_state(runner: DriverRunner, wait_s: float) -> str:
    driver = runner.driver
    if driver is None:
        return "skipped: no driver was loaded"
    if runner.driver_closed:
        return "skipped: the driver was closed"
    outcome: list[str] = []

    def run() -> None:
        try:
            driver.safe_state()
            outcome.append("done")
        except Exception as exc:  # nothing left to report to but the log
            outcome.append(f"failed: {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=run, name="last-safe-state", daemon=True)
    thread.start()
    thread.join(wait_s)
    return outcome[0] if outcome else f"still running after {wait_s:g} s"
