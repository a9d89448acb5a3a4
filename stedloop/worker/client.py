"""``WorkerDriver``: the Driver interface, served by a driver running in a worker process.

The daemon holds a WorkerDriver exactly as it would hold the driver itself. Behind it:

- a worker process (``python -m stedloop.worker``, optionally another interpreter) that runs
  the configured driver, reached through a ``WorkerLink``;
- a supervisor thread that observes the worker 20 times a second and, through the
  ``Watchdog`` rules, replaces it when it has crashed, stopped sending heartbeats, overrun a
  call, or not honoured an abort within the grace period: kill, start (or promote the
  standby worker), connect if the driver was connected, and command ``safe_state()`` through
  the fresh worker -- a fresh connection to the instrument;
- ``request_abort``, ``ping`` and ``health`` never wait for the driver, so the daemon stays
  responsive while a frame is being acquired, or while the driver hangs.

The safety caps are checked here before anything is sent, and again in the worker by the
driver itself.
"""

from __future__ import annotations

import collections
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import zmq

from stedloop.config.schema import StedloopConfig, WorkerSection
from stedloop.driver import AcquireRequest, DriverDescription, OverviewRequest, SafeStateContext
from stedloop.errors import (
    AcquisitionAborted,
    DriverDisconnected,
    DriverError,
)
from stedloop.frame import Frame, Overview
from stedloop.logs import get_logger
from stedloop.params import SafetyCaps
from stedloop.worker.link import WorkerLink
from stedloop.worker.watchdog import Fault, Observation, Watchdog, backoff_delays

log = get_logger("stedloop.worker")

FaultCallback = Callable[[str, dict[str, Any]], None]

#: How often the supervisor looks at the worker.
_SUPERVISOR_TICK_S = 0.05


class _WorkerLost(DriverError):
    """Internal: the worker was killed or died while a call was waiting on it."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(fault.message)
        self.fault = fault


@dataclass
class _CallInFlight:
    method: str
    started: float
    link: WorkerLink
    abort_at: float | None = None


class WorkerDriver(SafeStateContext):
    """A Driver whose calls run in a supervised worker process. Thread-safe."""

    def __init__(
        self,
        driver_name: str,
        driver_options: dict[str, Any] | None = None,
        caps: SafetyCaps | None = None,
        settings: WorkerSection | None = None,
        *,
        on_fault: FaultCallback | None = None,
        log_level: str = "info",
        inherit_fds: tuple[int, ...] = (),
    ) -> None:
        self.caps = caps if caps is not None else SafetyCaps()
        self._inherit_fds = inherit_fds  # passed to every worker process (POSIX)
        self.settings = settings if settings is not None else WorkerSection()
        self.driver_name = driver_name
        self._spec = {
            "driver": driver_name,
            "options": dict(driver_options or {}),
            "caps": self.caps.model_dump(mode="json"),
        }
        self._python = str(self.settings.python_executable or sys.executable)
        self._log_level = log_level
        self._on_fault = on_fault
        self._watchdog = Watchdog(self.settings)
        self._context = zmq.Context()
        self._lock = threading.RLock()  # guards the fields below
        self._call_lock = threading.Lock()  # one driver call at a time, like the driver itself
        self._start_lock = threading.Lock()
        self._spare_lock = threading.Lock()  # held while the spare's driver connects
        self._state = "stopped"  # stopped | ready | restarting | failed | closed
        self._link: WorkerLink | None = None
        self._spare: WorkerLink | None = None
        self._spare_starting = False
        self._spare_thread: threading.Thread | None = None
        self._call: _CallInFlight | None = None
        self._want_connected = False
        self._description: DriverDescription | None = None
        self._restarts = 0
        self._last_error: str | None = None
        self._faults: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self._last_safe_state: dict[str, Any] | None = None
        self._recovered = threading.Event()
        self._recovered.set()
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._notices: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._notifier: threading.Thread | None = None

    @classmethod
    def from_config(
        cls,
        config: StedloopConfig,
        on_fault: FaultCallback | None = None,
        inherit_fds: tuple[int, ...] = (),
    ) -> WorkerDriver:
        return cls(
            config.driver.name,
            config.driver_options(),
            config.safety,
            config.worker,
            on_fault=on_fault,
            log_level=config.logging.level,
            inherit_fds=inherit_fds,
        )

    # -- the Driver protocol -----------------------------------------------------------------
    def connect(self) -> None:
        """Start the worker (if not running) and connect the driver inside it."""
        self._ensure_started()
        self._invoke("connect", {}, self.settings.call_timeout_s)
        with self._lock:
            self._want_connected = True
        if self.settings.standby and self.settings.standby_connected:
            threading.Thread(target=self._connect_spare, name="worker-standby", daemon=True).start()

    def describe(self) -> DriverDescription:
        """The driver's description (asked once, then cached: it does not change)."""
        if self._description is None:
            self._ensure_started()
            self._description = self._invoke("describe", {}, self.settings.call_timeout_s)
        return self._description

    def acquire(self, request: AcquireRequest) -> Frame:
        # The caps are checked here, before anything leaves this process, and again in the
        # worker by the driver (BaseDriver.acquire) right before the instrument is touched.
        self.caps.check(request.params)
        self._ensure_started()
        # The whole request crosses (raw output included); what the driver reports as
        # applied is held to the caps by BaseDriver in the worker and by the session.
        frame: Frame = self._invoke("acquire", request.as_dict(), self.settings.acquire_timeout_s)
        return frame

    def acquire_overview(self, request: OverviewRequest) -> Overview:
        """The optional overview ability, forwarded (the worker's driver refuses it when it
        has none; ``describe().abilities`` says whether it has). Caps checked here first."""
        self.caps.check(request.params)
        self._ensure_started()
        overview: Overview = self._invoke(
            "acquire_overview", request.as_dict(), self.settings.acquire_timeout_s
        )
        return overview

    def safe_state(self) -> None:
        """Lasers to zero through the worker; an acquisition in flight is aborted first."""
        if self._state == "closed":
            return
        self._ensure_started()
        if self._call is not None:
            self.request_abort()
        self._invoke("safe_state", {}, self.settings.call_timeout_s)
        self._note_safe_state("commanded")

    def close(self) -> None:
        """Close the driver, stop the worker (and the standby). Idempotent; never orphans."""
        with self._lock:
            if self._state == "closed":
                return
            self._state = "closed"
            link, self._link = self._link, None
            spare, self._spare = self._spare, None
            call = self._call
        self._closed.set()
        self._wake.set()
        if call is not None:
            call.link.send({"type": "abort"})
        if self._supervisor is not None:
            self._supervisor.join(10.0)
        spare_thread = self._spare_thread
        if spare_thread is not None:
            spare_thread.join(self.settings.start_timeout_s + 5.0)
        with self._lock:
            spare, self._spare = self._spare or spare, None
        if link is not None:
            if self._call_lock.acquire(timeout=self.settings.abort_grace_period_s):
                try:
                    link.call("close", timeout_s=self.settings.call_timeout_s)
                except DriverError as exc:
                    log.warning("worker_driver_close_failed", error=str(exc))
                finally:
                    self._call_lock.release()
            # A frame that ignored the abort is still running: the worker aborts it again,
            # waits the grace period, then commands safe_state before it exits.
            link.shutdown(timeout_s=self.settings.abort_grace_period_s + 2.0)
        if spare is not None:
            spare.shutdown(timeout_s=2.0)
        self._notices.put(None)
        if self._notifier is not None:
            self._notifier.join(5.0)
        self._context.destroy(linger=0)

    # -- control: never waits for the driver -------------------------------------------------
    def request_abort(self) -> None:
        """Interrupt the acquisition in flight (returns at once).

        If the worker has not answered within ``abort_grace_period_s`` the supervisor kills
        it, starts a fresh one, commands ``safe_state()`` through it, and the blocked
        ``acquire`` raises ``AcquisitionAborted``.
        """
        with self._lock:
            call = self._call
            if call is None or call.method != "acquire":
                return
            if call.abort_at is None:
                call.abort_at = time.monotonic()
        call.link.send({"type": "abort"})
        log.info("worker_abort_requested", pid=call.link.pid)
        self._wake.set()

    def ping(self, timeout_s: float = 1.0) -> dict[str, Any]:
        """A round trip to the worker (answered even while the driver is busy or hung)."""
        link = self._link
        if link is None or self._state != "ready":
            raise DriverDisconnected(f"no driver worker to ping (state {self._state})")
        started = time.perf_counter()
        try:
            reply = link.request({"type": "ping"}).result(timeout_s)
        except FutureTimeout:
            raise DriverDisconnected(
                f"the driver worker did not answer within {timeout_s:g} s"
            ) from None
        return {**reply, "round_trip_ms": (time.perf_counter() - started) * 1000}

    def health(self) -> dict[str, Any]:
        """What the supervisor knows, from memory: no I/O, safe to call from any thread."""
        with self._lock:
            link, call, spare = self._link, self._call, self._spare
            now = time.monotonic()
            return {
                "state": self._state,
                "driver": self.driver_name,
                "pid": link.pid if link else None,
                "python": (link.hello or {}).get("python") if link else None,
                "busy": call.method if call else None,
                "busy_for_s": round(now - call.started, 3) if call else 0.0,
                "abort_requested": bool(call and call.abort_at is not None),
                "heartbeat_age_s": round(now - link.last_heartbeat, 3) if link else None,
                "standby_pid": spare.pid if spare else None,
                "restarts": self._restarts,
                "last_error": self._last_error,
                "faults": list(self._faults),
                "last_safe_state": self._last_safe_state,
            }

    # -- calls -------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        # Starting takes a while (a Python process, the driver's imports); it is serialised by
        # its own lock so that health() and request_abort() never wait behind it.
        with self._start_lock:
            with self._lock:
                if self._state == "closed":
                    raise DriverDisconnected("the driver worker was closed")
                if self._state in ("ready", "restarting"):
                    return
            # stopped (first use) or failed (a new attempt after the restarts ran out)
            link = self._start_link()
            if self._want_connected:  # after a failure: back to where the driver was
                try:
                    link.call("connect", timeout_s=self.settings.call_timeout_s)
                    link.driver_connected = True
                    link.call("safe_state", timeout_s=self.settings.call_timeout_s)
                except BaseException:
                    link.kill(DriverDisconnected("the driver did not reconnect"))
                    raise
            with self._lock:
                if self._state == "closed":
                    link.shutdown()
                    raise DriverDisconnected("the driver worker was closed")
                self._link = link
                self._state = "ready"
                self._last_error = None
            if self._supervisor is None:
                self._supervisor = threading.Thread(
                    target=self._supervise, name="worker-supervisor", daemon=True
                )
                self._supervisor.start()
                self._notifier = threading.Thread(
                    target=self._notify_loop, name="worker-notifier", daemon=True
                )
                self._notifier.start()
        self._start_spare_later()

    def _start_link(self) -> WorkerLink:
        link = WorkerLink(
            self._context, self.settings, self._python, self._log_level, self._inherit_fds
        )
        try:
            hello = link.wait_hello(self.settings.start_timeout_s)
            link.call("init", self._spec, timeout_s=self.settings.start_timeout_s)
        except BaseException as exc:
            link.kill(DriverDisconnected(str(exc)))
            raise
        log.info("worker_started", pid=link.pid, python=hello.get("python"), address=link.address)
        return link

    def _ready_link(self) -> WorkerLink:
        """The working link, waiting out a restart in progress."""
        limit_s = self.settings.start_timeout_s * self.settings.restart_max_attempts + sum(
            backoff_delays(self.settings)
        )
        if not self._recovered.wait(limit_s):
            raise DriverDisconnected("the driver worker is still being restarted")
        with self._lock:
            if self._state == "ready" and self._link is not None:
                return self._link
            state, error = self._state, self._last_error
        raise DriverDisconnected(
            f"the driver worker is not running (state {state})"
            + (f": {error}; call connect() to try again" if error else "")
        )

    def _invoke(self, method: str, args: dict[str, Any], timeout_s: float) -> Any:
        # Only one driver call at a time; a second caller waits for the first (the driver
        # itself is not re-entrant). safe_state and close abort an acquisition first.
        wait_s = timeout_s + self.settings.abort_grace_period_s + self.settings.start_timeout_s
        if not self._call_lock.acquire(timeout=wait_s):
            raise DriverError(f"driver call {method} waited {wait_s:g} s for the call before it")
        try:
            link = self._ready_link()
            future = link.request({"type": "call", "method": method, "args": args}, method=method)
            call = _CallInFlight(method, time.monotonic(), link)
            with self._lock:
                self._call = call
            try:
                # The supervisor ends every call: by its reply, or by killing the worker
                # (timeouts, ignored aborts); the bound below only guards against its failure.
                backstop_s = timeout_s + self.settings.heartbeat_timeout_s + 10.0
                return future.result(backstop_s)
            except _WorkerLost as lost:
                self._recovered.wait(
                    self.settings.start_timeout_s * self.settings.restart_max_attempts
                    + sum(backoff_delays(self.settings))
                )
                raise self._lost_error(method, call, lost.fault) from None
            except FutureTimeout:
                raise DriverError(
                    f"driver call {method} got no answer within {backstop_s:g} s"
                ) from None
            finally:
                with self._lock:
                    self._call = None
        finally:
            self._call_lock.release()

    def _lost_error(self, method: str, call: _CallInFlight, fault: Fault) -> DriverError:
        with self._lock:
            outcome = (
                f"a fresh worker was started (pid {self._link.pid}) and the lasers were "
                "commanded safe through it"
                if self._state == "ready" and self._link is not None
                else f"no fresh worker could be started: {self._last_error}"
            )
        if call.abort_at is not None:
            return AcquisitionAborted(f"{method} aborted: {fault.message}; {outcome}")
        return DriverDisconnected(f"{method} failed: {fault.message}; {outcome}")

    # -- supervision -------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(_SUPERVISOR_TICK_S)
            self._wake.clear()
            with self._lock:
                if self._state != "ready" or self._link is None:
                    continue
                link, call = self._link, self._call
            now = time.monotonic()
            active = call if call is not None and call.link is link else None
            seen = Observation(
                pid=link.pid,
                exit_code=link.exit_code,
                heartbeat_age_s=now - link.last_heartbeat,
                call_method=active.method if active else None,
                call_age_s=now - active.started if active else 0.0,
                abort_age_s=now - active.abort_at if active and active.abort_at else None,
            )
            fault = self._watchdog.check(seen)
            if fault is not None and not self._closed.is_set():
                self._recover(link, fault)
            self._tend_spare()

    def _recover(self, link: WorkerLink, fault: Fault) -> None:
        """Kill the faulty worker, report, start a fresh one and make the lasers safe."""
        with self._lock:
            self._state = "restarting"
            self._recovered.clear()
            self._link = None
        detected = time.monotonic()
        log.error("worker_fault", kind=fault.kind, reason=fault.reason, message=fault.message)
        link.kill(_WorkerLost(fault))
        details = {"reason": fault.reason, "message": fault.message, **fault.details}
        with self._lock:
            self._faults.append({"kind": fault.kind, "at_s": time.time(), **details})
        self._notices.put((fault.kind, details))
        try:
            self._restart(fault, detected)
        finally:
            self._recovered.set()
            self._start_spare_later()

    def _restart(self, fault: Fault, detected: float) -> None:
        attempts = 0
        for delay_s in backoff_delays(self.settings):
            if self._closed.wait(delay_s):
                return
            attempts += 1
            new: WorkerLink | None = None
            try:
                new = self._take_spare() or self._start_link()
                if self._want_connected and not new.driver_connected:
                    new.call("connect", timeout_s=self.settings.call_timeout_s)
                    new.driver_connected = True
                new.call("safe_state", timeout_s=self.settings.call_timeout_s)
            except Exception as exc:
                log.error("worker_restart_attempt_failed", attempt=attempts, error=str(exc))
                with self._lock:
                    self._last_error = str(exc)
                if new is not None:
                    new.kill(DriverDisconnected(str(exc)))
                continue
            with self._lock:
                if self._state == "closed":
                    new.shutdown()
                    return
                self._link = new
                self._state = "ready"
                self._restarts += 1
                self._last_error = None
            self._note_safe_state("commanded after restart")
            log.warning(
                "worker_restarted",
                pid=new.pid,
                attempt=attempts,
                after=fault.reason,
                safe_after_s=round(time.monotonic() - detected, 3),
            )
            return
        with self._lock:
            if self._state != "closed":
                self._state = "failed"
            error = self._last_error
        log.error("worker_restart_failed", attempts=attempts, error=error)
        self._notices.put(
            ("worker_restart_failed", {"attempts": attempts, "error": error, "after": fault.reason})
        )

    def _note_safe_state(self, how: str) -> None:
        with self._lock:
            link = self._link
            self._last_safe_state = {
                "how": how,
                "pid": link.pid if link else None,
                "at_s": time.time(),
            }

    def _notify_loop(self) -> None:
        # Faults are reported from their own thread so a slow callback never delays a restart.
        while (notice := self._notices.get()) is not None:
            if self._on_fault is None:
                continue
            try:
                self._on_fault(*notice)
            except Exception:
                log.exception("worker_on_fault_callback_failed", kind=notice[0])

    # -- the standby worker ------------------------------------------------------------------
    def _start_spare_later(self) -> None:
        if not self.settings.standby:
            return
        with self._lock:
            if self._spare is not None or self._spare_starting or self._state == "closed":
                return
            self._spare_starting = True
            self._spare_thread = threading.Thread(
                target=self._start_spare, name="worker-standby", daemon=True
            )
            self._spare_thread.start()

    def _start_spare(self) -> None:
        spare: WorkerLink | None = None
        try:
            spare = self._start_link()
        except Exception as exc:
            log.warning("worker_standby_failed", error=str(exc))
        if spare is not None and self.settings.standby_connected and self._want_connected:
            try:
                spare.call("connect", timeout_s=self.settings.call_timeout_s)
                spare.driver_connected = True
            except Exception as exc:  # still a useful spare: it connects when promoted
                log.warning("worker_standby_connect_failed", error=str(exc))
        with self._lock:
            self._spare_starting = False
            if spare is not None and self._state != "closed" and self._spare is None:
                self._spare, spare = spare, None
        if spare is not None:
            spare.shutdown()

    def _connect_spare(self) -> None:
        """With ``standby_connected``: connect the spare once the daemon has connected."""
        thread = self._spare_thread
        if thread is not None:
            thread.join(self.settings.start_timeout_s + self.settings.call_timeout_s)
        with self._spare_lock:
            spare = self._spare
            if spare is None or spare.driver_connected:
                return
            try:
                spare.call("connect", timeout_s=self.settings.call_timeout_s)
                spare.driver_connected = True
            except Exception as exc:  # the restart path connects it again anyway
                log.warning("worker_standby_connect_failed", error=str(exc))

    def _take_spare(self) -> WorkerLink | None:
        with self._spare_lock, self._lock:  # never while the spare is connecting
            spare, self._spare = self._spare, None
        if spare is None:
            return None
        if (
            spare.exit_code is not None
            or time.monotonic() - spare.last_heartbeat > self.settings.heartbeat_timeout_s
        ):
            spare.kill(DriverDisconnected("standby worker unusable"))
            return None
        return spare

    def _tend_spare(self) -> None:
        spare = self._spare
        if spare is not None and spare.exit_code is not None:
            log.warning("worker_standby_exited", pid=spare.pid, exit_code=spare.exit_code)
            with self._lock:
                if self._spare is spare:
                    self._spare = None
            spare.kill(DriverDisconnected("standby worker exited"))
            self._start_spare_later()
