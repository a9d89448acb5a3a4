"""The watchdog: hung, crashed and frozen workers are killed, reported, replaced, made safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stedloop import errors
from stedloop.driver import AcquireRequest
from tests.worker_helpers import FIELD, PARAMS, process_gone, simulator_worker, wait_for


class Faults:
    """Collects on_fault calls (they come from the worker's notifier thread)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __call__(self, kind: str, details: dict[str, Any]) -> None:
        with self._lock:
            self.calls.append((kind, details))

    def kinds(self) -> list[str]:
        with self._lock:
            return [kind for kind, _ in self.calls]


def _acquire_in_thread(remote) -> tuple[threading.Thread, list[object]]:  # type: ignore[no-untyped-def]
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(remote.acquire(AcquireRequest(PARAMS, FIELD)))
        except Exception as exc:
            outcome.append((exc, time.monotonic()))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("standby_connected", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_abort_of_a_hung_acquire_kills_restarts_and_makes_safe_within_grace_plus_1s(
    standby_connected: bool,
) -> None:
    faults = Faults()
    remote = simulator_worker(
        {"hang_on_frame": 0},
        on_fault=faults,
        standby=True,
        standby_connected=standby_connected,
    )
    try:
        remote.connect()
        wait_for(lambda: remote.health()["standby_pid"] is not None, 30, "the standby worker")
        if standby_connected:
            wait_for(lambda: remote._spare.driver_connected, 30, "the standby to connect")
        hung_pid = remote.health()["pid"]
        thread, outcome = _acquire_in_thread(remote)
        wait_for(lambda: remote.ping()["busy"] == "acquire", 5, "the worker to be acquiring")
        asked = time.monotonic()
        remote.request_abort()
        thread.join(15)
        exc, raised_at = outcome[0]  # type: ignore[misc]
        assert isinstance(exc, errors.AcquisitionAborted), exc
        assert "commanded safe" in str(exc)
        grace = remote.settings.abort_grace_period_s
        health = remote.health()
        assert health["state"] == "ready" and health["restarts"] == 1
        assert health["pid"] != hung_pid and process_gone(hung_pid)
        safe = health["last_safe_state"]
        assert safe["pid"] == health["pid"] and safe["how"] == "commanded after restart"
        # acquire raises only after the lasers were commanded safe, so this bounds both
        assert raised_at - asked <= grace + 1.0, raised_at - asked
        wait_for(lambda: faults.kinds() == ["worker_hung"], 2, "the fault report")
        assert faults.calls[0][1]["reason"] == "abort_not_honoured"
        assert faults.calls[0][1]["pid"] == hung_pid
        assert remote.ping()["calls_done"] >= 2  # the fresh worker answers: connect, safe_state
    finally:
        remote.close()


def test_a_crash_is_reported_and_the_worker_restarted() -> None:
    faults = Faults()
    remote = simulator_worker({"crash_on_frame": 1}, on_fault=faults)
    try:
        remote.connect()
        remote.acquire(AcquireRequest(PARAMS, FIELD))
        first_pid = remote.health()["pid"]
        with pytest.raises(errors.DriverDisconnected, match="exited with code 3"):
            remote.acquire(AcquireRequest(PARAMS, FIELD))
        wait_for(lambda: faults.kinds() == ["worker_crashed"], 2, "the fault report")
        assert faults.calls[0][1]["exit_code"] == 3 and faults.calls[0][1]["pid"] == first_pid
        health = remote.health()
        assert health["state"] == "ready" and health["pid"] != first_pid
        assert health["restarts"] == 1 and health["faults"][0]["kind"] == "worker_crashed"
        remote.acquire(AcquireRequest(PARAMS, FIELD))  # the fresh worker's frame 0: fine
    finally:
        remote.close()


def test_a_call_past_its_timeout_counts_as_hung_without_any_abort() -> None:
    faults = Faults()
    remote = simulator_worker({"hang_on_frame": 0}, on_fault=faults, acquire_timeout_s=1.0)
    try:
        remote.connect()
        hung_pid = remote.health()["pid"]
        started = time.monotonic()
        with pytest.raises(errors.DriverDisconnected, match="has run"):
            remote.acquire(AcquireRequest(PARAMS, FIELD))
        assert time.monotonic() - started < 1.0 + 5.0  # timeout, then a cold restart
        wait_for(lambda: faults.kinds() == ["worker_hung"], 2, "the fault report")
        assert faults.calls[0][1]["reason"] == "call_timeout"
        assert remote.health()["pid"] != hung_pid and process_gone(hung_pid)
    finally:
        remote.close()


@pytest.mark.skipif(os.name == "nt", reason="SIGSTOP is POSIX")
def test_a_frozen_worker_is_detected_by_missing_heartbeats() -> None:
    faults = Faults()
    remote = simulator_worker(on_fault=faults, heartbeat_timeout_s=1.0)
    try:
        remote.connect()
        frozen = remote.health()["pid"]
        stopped_at = time.monotonic()
        os.kill(frozen, signal.SIGSTOP)
        wait_for(lambda: faults.kinds() == ["worker_hung"], 10, "worker_hung")
        detected_s = time.monotonic() - stopped_at
        assert 1.0 <= detected_s < 1.0 + 2.0
        assert faults.calls[0][1]["reason"] == "heartbeat_silence"
        wait_for(lambda: remote.health()["state"] == "ready", 30, "the restart")
        assert remote.health()["pid"] != frozen
        wait_for(lambda: process_gone(frozen), 5, "the frozen worker to be killed")
        remote.acquire(AcquireRequest(PARAMS, FIELD))
    finally:
        remote.close()


@pytest.mark.skipif(os.name == "nt", reason="uses SIGKILL")
def test_restarts_are_bounded_and_then_reported() -> None:
    faults = Faults()
    remote = simulator_worker(on_fault=faults, restart_max_attempts=2)
    try:
        remote.connect()
        remote._python = "/nonexistent/python"  # every later start fails
        os.kill(remote.health()["pid"], signal.SIGKILL)
        wait_for(lambda: remote.health()["state"] == "failed", 10, "restarts to run out")
        wait_for(lambda: len(faults.calls) == 2, 2, "both reports")
        assert faults.kinds() == ["worker_crashed", "worker_restart_failed"]
        assert faults.calls[1][1]["attempts"] == 2
        with pytest.raises(errors.DriverDisconnected, match="python_executable"):
            remote.acquire(AcquireRequest(PARAMS, FIELD))
        remote._python = sys.executable  # the interpreter is back: the next call recovers
        remote.acquire(
            AcquireRequest(PARAMS, FIELD)
        )  # started, connected and made safe again first
        assert remote.health()["state"] == "ready"
    finally:
        remote.close()


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="uses SIGKILL on the parent")
def test_a_worker_whose_daemon_dies_exits_by_itself() -> None:
    parent = textwrap.dedent(
        """
        import os, signal, sys
        from tests.worker_helpers import simulator_worker
        remote = simulator_worker()
        remote.connect()
        print("WORKER_PID", remote.health()["pid"], remote._link.address, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, timeout=60, cwd=os.getcwd()
    )
    pid_text, address = result.stdout.split("WORKER_PID", 1)[1].split()[:2]
    worker_pid = int(pid_text)
    wait_for(lambda: process_gone(worker_pid), 10, "the orphaned worker to exit")
    folder = Path(address[len("ipc://") :]).parent
    wait_for(lambda: not folder.exists(), 5, "the worker to remove the dead daemon's folder")


@pytest.mark.skipif(os.name == "nt", reason="uses SIGKILL")
def test_the_link_survives_its_worker_dying_and_still_shuts_down_promptly() -> None:
    # Keepalives to a vanished peer fail with EHOSTUNREACH; that must neither end the I/O
    # thread nor make kill() block on a queue nobody reads.
    import zmq

    from stedloop.worker.link import WorkerLink
    from tests.worker_helpers import fast_settings

    context = zmq.Context()
    link = WorkerLink(context, fast_settings(), sys.executable)
    try:
        link.wait_hello(30)
        os.kill(link.pid, signal.SIGKILL)
        link.process.wait(5)
        time.sleep(0.5)  # several keepalive periods
        assert link._thread.is_alive()
        started = time.monotonic()
        link.kill(errors.DriverDisconnected("test"))
        assert time.monotonic() - started < 2.0
        assert not link._thread.is_alive()
    finally:
        context.destroy(linger=0)
