"""The real daemon with ``driver.in_worker = true``: faults in the worker never stop it.

The daemon runs as a subprocess on free loopback ports; its driver runs in a worker process
with the simulator told to crash or hang. The daemon must keep answering, replace the worker,
pause (crash) or stop (aborted hang) the session, command the lasers safe through the fresh
worker, and keep every frame it recorded.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stedloop.client import Client
from stedloop.client.local_daemon import start_daemon, stop_daemon
from stedloop.store import SessionStore
from stedloop.store import ledger as L

SITE = """
[driver]
in_worker = true
[objectives]
names = ["resolution"]
[session]
budget_frames = {budget}
[drivers.simulator]
field_px = 64
sample_fields = 16
acquire_delay_s = 0.2
{fault}
[worker]
heartbeat_interval_s = 0.1
heartbeat_timeout_s = 2.0
abort_grace_period_s = 0.5
restart_backoff_s = 0.05
{worker}
"""

pytestmark = pytest.mark.slow


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., tuple[dict[str, Any], Path]]]:
    processes: list[subprocess.Popen[bytes]] = []

    def run(fault: str, budget: int, worker: str = "") -> tuple[dict[str, Any], Path]:
        home = tmp_path / "home"
        home.mkdir()
        site = home / "site.toml"
        site.write_text(SITE.format(fault=fault, budget=budget, worker=worker))
        process, ready = start_daemon(home, {"STEDLOOP_CONFIG": str(site)})
        processes.append(process)
        return ready, home

    yield run
    for process in processes:
        assert stop_daemon(process) == 0  # a clean stop after the faults


def _events(client: Client, since: int = 0) -> list[dict[str, Any]]:
    return client.call("events.since", seq=since, limit=1000)["events"]


def _wait(client: Client, what: str, test: Callable[[list[dict[str, Any]]], bool]) -> list:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        events = _events(client)
        if test(events):
            return events
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; events: {_events(client)}")


def _faults(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["topic"] == "log" and "fault" in (e.get("data") or {})]


def _state_events(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["state"] for e in events if e["topic"] == "session"]


def _ledger_frames(home: Path, session_id: str) -> tuple[list[int], list[str]]:
    """Frame numbers with an ``acquired`` event (and a TIFF on disk), and all event kinds."""
    store = SessionStore(home / "sessions")
    record = store.open(session_id, readonly=True)
    try:
        events = list(record.ledger.events())
    finally:
        record.close()
    acquired = [e for e in events if e.kind == L.ACQUIRED]
    for event in acquired:
        assert (store.root / session_id / event.payload["tiff"]).is_file()
    return sorted(e.frame for e in acquired), [e.kind for e in events]


def _daemon_log(home: Path) -> list[dict[str, Any]]:
    lines = []
    for line in (home / "daemon.log").read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def _timed_status(client: Client) -> float:
    started = time.perf_counter()
    client.call("status")
    return time.perf_counter() - started


def test_a_crashing_worker_pauses_the_session_which_resumes_and_finishes(start) -> None:  # type: ignore[no-untyped-def]
    ready, home = start("crash_on_frame = 2", budget=4)
    with Client(ready["request_address"], timeout_s=5) as client:
        started = client.call("session.start", budget_frames=4, name="crash")
        session_id, token = started["session_id"], started["token"]
        events = _wait(client, "the crash report", lambda ev: bool(_faults(ev)))
        assert _faults(events)[0]["fault"] == "worker_crashed"
        assert _faults(events)[0]["exit_code"] == 3
        assert _timed_status(client) < 1.0  # the daemon answers while the worker restarts
        _wait(client, "the pause", lambda ev: "paused" in _state_events(ev))
        assert client.call("status")["session"]["state"] == "paused"
        client.call("session.resume", session_id=session_id, token=token)
        events = _wait(client, "the end", lambda ev: "finished" in _state_events(ev))
    frames, kinds = _ledger_frames(home, session_id)
    assert frames == [0, 1, 2, 3]  # the crashed frame was retried on the fresh worker
    assert kinds[-1] == L.FINISHED and L.ERROR in kinds
    restarted = [line for line in _daemon_log(home) if line.get("event") == "worker_restarted"]
    assert restarted and restarted[0]["after"] == "exited"


def test_an_aborted_hang_kills_the_worker_makes_safe_and_keeps_the_ledger(start) -> None:  # type: ignore[no-untyped-def]
    ready, home = start("hang_on_frame = 1", budget=5)
    with Client(ready["request_address"], timeout_s=5) as client:
        started = client.call("session.start", budget_frames=5, name="hang")
        session_id, token = started["session_id"], started["token"]
        _wait(client, "frame 0", lambda ev: any(e["topic"] == "frame" for e in ev))
        time.sleep(1.0)  # frame 1 is now hung in the worker
        worst_s = max(_timed_status(client) for _ in range(20))
        assert worst_s < 1.0  # status never waits for the hung driver
        assert client.call("status")["session"]["state"] == "running"
        client.call("session.stop", session_id=session_id, token=token, abort=True)
        events = _wait(client, "the stop", lambda ev: "stopped" in _state_events(ev))
        fault = _faults(events)[0]
        assert fault["fault"] == "worker_hung" and fault["reason"] == "abort_not_honoured"
    frames, kinds = _ledger_frames(home, session_id)
    assert frames == [0]  # the frame recorded before the hang is kept
    assert kinds[-1] == L.STOPPED
    log = _daemon_log(home)
    restarted = [line for line in log if line.get("event") == "worker_restarted"]
    assert restarted and restarted[0]["after"] == "abort_not_honoured"


def test_a_hang_nobody_aborts_is_caught_by_the_watchdog_and_pauses_the_session(start) -> None:  # type: ignore[no-untyped-def]
    ready, home = start("hang_on_frame = 1", budget=3, worker="acquire_timeout_s = 1.5")
    with Client(ready["request_address"], timeout_s=5) as client:
        started = client.call("session.start", budget_frames=3, name="watchdog")
        session_id, token = started["session_id"], started["token"]
        events = _wait(client, "the hang report", lambda ev: bool(_faults(ev)))
        fault = _faults(events)[0]
        assert fault["fault"] == "worker_hung" and fault["reason"] == "call_timeout"
        _wait(client, "the pause", lambda ev: "paused" in _state_events(ev))
        assert _timed_status(client) < 1.0
        # Each fresh simulator hangs again on its own second frame (its counter restarts),
        # so the session is paused once per hang: resume until it finishes.
        resumed = 0
        deadline = time.monotonic() + 60
        while "finished" not in _state_events(_events(client)):
            assert time.monotonic() < deadline, _state_events(_events(client))
            if client.call("status")["session"]["state"] == "paused":
                client.call("session.resume", session_id=session_id, token=token)
                resumed += 1
            assert resumed <= 3
            time.sleep(0.1)
    frames, kinds = _ledger_frames(home, session_id)
    assert frames == [0, 1, 2]  # each hung frame was retried on a fresh worker
    assert kinds[-1] == L.FINISHED and L.PAUSED in kinds and resumed >= 1
