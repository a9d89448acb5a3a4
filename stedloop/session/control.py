"""Thread-safe control of a running session: stop, abort, pause, resume.

Any thread (the daemon's request loop, a signal handler, a watchdog) calls the request
methods; the session's loop reads them at frame boundaries. Pause takes effect at the next
frame boundary (the lasers go to the safe state while paused). Abort also interrupts the
frame in flight through the driver's ``request_abort`` when it has one.

States: ``running`` -> ``paused`` <-> ``running`` -> ``stopping`` -> ``finished``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

State = Literal["running", "paused", "stopping", "finished"]


class SessionControl:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._stop = False
        self._abort = False
        self._pause = False
        self._state: State = "running"
        self._abort_hook: Callable[[], None] | None = None

    # -- requests (any thread) ------------------------------------------------------------
    def request_stop(self, abort: bool = False) -> None:
        """Stop after the frame in flight; with ``abort``, interrupt that frame too."""
        with self._cond:
            if self._state == "finished":
                return
            self._stop = True
            self._abort = self._abort or abort
            self._state = "stopping"
            hook = self._abort_hook if abort else None
            self._cond.notify_all()
        if hook is not None:
            hook()  # outside the lock: a driver may take its time

    def request_pause(self) -> None:
        """Pause at the next frame boundary (ignored once stopping or finished)."""
        with self._cond:
            if not self._stop and self._state != "finished":
                self._pause = True
                self._cond.notify_all()

    def resume(self) -> None:
        """Cancel a pause request, or continue a paused session."""
        with self._cond:
            self._pause = False
            if self._state == "paused":
                self._state = "running"
            self._cond.notify_all()

    # -- views ----------------------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        with self._cond:
            return self._stop

    @property
    def abort_requested(self) -> bool:
        with self._cond:
            return self._abort

    @property
    def pause_requested(self) -> bool:
        with self._cond:
            return self._pause

    @property
    def state(self) -> State:
        with self._cond:
            return self._state

    # -- used by the session loop ---------------------------------------------------------
    def attach_abort(self, hook: Callable[[], None] | None) -> None:
        """Register what an abort calls (the driver's ``request_abort``)."""
        with self._cond:
            self._abort_hook = hook
            abort_now = self._abort and hook is not None
        if abort_now:
            hook()  # type: ignore[misc]

    def enter_pause(self) -> bool:
        """Mark the session paused if a pause is pending; False when stop won the race."""
        with self._cond:
            if self._stop or not self._pause:
                return False
            self._state = "paused"
            return True

    def wait_while_paused(self, timeout_s: float | None = None) -> bool:
        """Block while paused; True once resumed or stopping, False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pause or self._stop, timeout=timeout_s)

    def mark_running(self) -> None:
        with self._cond:
            if self._state == "paused" and not self._stop:
                self._state = "running"

    def mark_finished(self) -> None:
        with self._cond:
            self._state = "finished"
            self._abort_hook = None
            self._cond.notify_all()

    def wait_finished(self, timeout_s: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._state == "finished", timeout=timeout_s)
