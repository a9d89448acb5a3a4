"""When a driver worker counts as hung or crashed, and how restarts back off.

Pure policy, no I/O: the WorkerDriver's supervisor thread observes its worker a few times a
second and asks ``Watchdog.check`` whether that is a fault. The rules, first match wins:

- the process has exited                                   -> ``worker_crashed``
- an abort was not honoured within the grace period        -> ``worker_hung``
- no heartbeat for ``heartbeat_timeout_s`` (frozen process) -> ``worker_hung``
- a call has run past its timeout (a driver stuck mid-call) -> ``worker_hung``

A hung driver call does not stop heartbeats (they come from the worker's main thread), which
is why the call and abort timeouts exist beside the heartbeat timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from stedloop.config.schema import WorkerSection

FaultKind = Literal["worker_hung", "worker_crashed"]


@dataclass(frozen=True)
class Observation:
    """What the supervisor sees of one worker at one moment."""

    pid: int
    exit_code: int | None
    heartbeat_age_s: float
    #: The driver call the daemon is waiting for, and for how long; None when idle.
    call_method: str | None = None
    call_age_s: float = 0.0
    #: Seconds since an abort of the call in flight was requested; None when none was.
    abort_age_s: float | None = None


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    reason: str  # exited | abort_not_honoured | heartbeat_silence | call_timeout
    message: str
    details: dict[str, Any] = field(default_factory=dict)


class Watchdog:
    """Decides from an ``Observation`` whether the worker must be replaced."""

    def __init__(self, settings: WorkerSection) -> None:
        self.settings = settings

    def check(self, seen: Observation) -> Fault | None:
        s = self.settings
        base = {"pid": seen.pid, "call": seen.call_method}
        if seen.exit_code is not None:
            return Fault(
                "worker_crashed",
                "exited",
                f"driver worker (pid {seen.pid}) exited with code {seen.exit_code}",
                {**base, "exit_code": seen.exit_code},
            )
        if seen.abort_age_s is not None and seen.abort_age_s > s.abort_grace_period_s:
            return Fault(
                "worker_hung",
                "abort_not_honoured",
                f"driver worker (pid {seen.pid}) did not honour an abort of {seen.call_method} "
                f"within {s.abort_grace_period_s:g} s",
                {**base, "abort_age_s": round(seen.abort_age_s, 3)},
            )
        if seen.heartbeat_age_s > s.heartbeat_timeout_s:
            return Fault(
                "worker_hung",
                "heartbeat_silence",
                f"driver worker (pid {seen.pid}) sent no heartbeat for "
                f"{seen.heartbeat_age_s:.1f} s (limit {s.heartbeat_timeout_s:g} s)",
                {**base, "silent_for_s": round(seen.heartbeat_age_s, 3)},
            )
        if seen.call_method is not None:
            acquiring = seen.call_method in ("acquire", "acquire_overview")
            limit = s.acquire_timeout_s if acquiring else s.call_timeout_s
            if seen.call_method == "init":
                limit = s.start_timeout_s
            if seen.call_age_s > limit:
                return Fault(
                    "worker_hung",
                    "call_timeout",
                    f"driver call {seen.call_method} in worker (pid {seen.pid}) has run "
                    f"{seen.call_age_s:.1f} s (limit {limit:g} s)",
                    {**base, "call_age_s": round(seen.call_age_s, 3)},
                )
        return None


def backoff_delays(settings: WorkerSection) -> Iterator[float]:
    """Delay before each start attempt: the first at once (the lasers wait on it), then
    ``restart_backoff_s`` doubling up to ``restart_backoff_max_s``; ``restart_max_attempts``
    in all."""
    delay = settings.restart_backoff_s
    for attempt in range(settings.restart_max_attempts):
        if attempt == 0:
            yield 0.0
            continue
        yield min(delay, settings.restart_backoff_max_s)
        delay *= 2
