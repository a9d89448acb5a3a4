"""Service life of the real daemon: signals, crash and resume, systemd notify, CURVE, CLI."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from stedloop.client import Client, DaemonError
from stedloop.client.local_daemon import start_daemon, stop_daemon
from stedloop.store import SessionStore
from stedloop.store import ledger as L

SITE = """
[objectives]
names = ["resolution"]
[drivers.simulator]
field_px = 64
sample_fields = 16
acquire_delay_s = {delay}
"""


def spawn(home: Path, delay_s: float = 0.2, **env: str) -> tuple[subprocess.Popen[bytes], dict]:
    home.mkdir(parents=True, exist_ok=True)
    site = home / "site.toml"
    site.write_text(SITE.format(delay=delay_s))
    return start_daemon(home, {"STEDLOOP_CONFIG": str(site), **env})


def wait_frames(client: Client, n: int, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        session = client.call("status")["session"]
        if session and session["frames"] >= n:
            return session
        assert time.monotonic() < deadline, session
        time.sleep(0.05)


def ledger_events(home: Path, session_id: str) -> list[L.Event]:
    record = SessionStore(home / "sessions").open(session_id, readonly=True)
    try:
        return record.ledger.events()
    finally:
        record.close()


def test_sigterm_stops_the_session_cleanly_and_exits_zero(tmp_path: Path) -> None:
    home = tmp_path / "home"
    process, ready = spawn(home)
    try:
        with Client(ready["request_address"]) as client:
            sid = client.call("session.start", budget_frames=500)["session_id"]
            wait_frames(client, 2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    events = ledger_events(home, sid)
    assert events[-1].kind == L.STOPPED
    log = [
        json.loads(line)
        for line in (home / "daemon.log").read_text().splitlines()
        if line.startswith("{")
    ]
    names = [entry["event"] for entry in log]
    assert names.index("driver_safe") < names.index("daemon_ready")  # safe first at start-up
    assert names.index("daemon_stopping") < names.index("daemon_stopped")
    assert any(e["event"] == "driver_safe" and e.get("reason") == "shutdown" for e in log)
    assert log[-1]["event"] == "daemon_stopped"


def test_sigkill_then_restart_reports_the_interrupted_session_and_resumes_it(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    process, ready = spawn(home, delay_s=0.1)
    with Client(ready["request_address"]) as client:
        sid = client.call("session.start", budget_frames=6)["session_id"]
        wait_frames(client, 2)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    recorded_before = {e.frame for e in ledger_events(home, sid) if e.kind == L.TOLD}
    assert len(recorded_before) >= 2

    process, ready = spawn(home, delay_s=0.0)
    try:
        with Client(ready["request_address"]) as client:
            status = client.call("status")
            assert status["interrupted"] == [sid]
            page = client.call("events.since", seq=0)
            assert any(e["session_id"] == sid and e["topic"] == "log" for e in page["events"])
            resumed = client.call("session.start", resume=sid)
            assert resumed["session_id"] == sid and resumed["resumed"] is True
            deadline = time.monotonic() + 60
            while client.call("status")["session"]["state"] not in (
                "finished",
                "stopped",
                "failed",
            ):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert client.call("status")["session"]["state"] == "finished"
            assert client.call("status")["interrupted"] == []
    finally:
        assert stop_daemon(process) == 0
    events = ledger_events(home, sid)
    told = [e.frame for e in events if e.kind == L.TOLD]
    assert sorted(told) == list(range(6))  # every frame once: none lost, none twice
    assert recorded_before <= set(told)
    assert events[-1].kind == L.FINISHED


def test_systemd_notify_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(30)
        process, _ready = spawn(tmp_path / "home", NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
        try:
            messages = [server.recv(4096).decode()]
            assert messages[0].startswith("READY=1")
            assert server.recv(4096) == b"WATCHDOG=1"
            t0 = time.monotonic()
            assert server.recv(4096) == b"WATCHDOG=1"
            assert time.monotonic() - t0 < 0.4  # pinged at half the period, at most
            process.send_signal(signal.SIGTERM)
            rest = []
            while (message := server.recv(4096)) != b"STOPPING=1":
                rest.append(message)
            assert set(rest) <= {b"WATCHDOG=1"}
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()


@pytest.mark.slow  # the daemon imports torch to try the model: ~15 s on a busy 2-core machine
def test_status_reports_a_missing_quality_model_without_blocking_others(tmp_path: Path) -> None:
    process, ready = spawn(
        tmp_path / "home",
        STEDLOOP_QUALITY__MODEL_PATH=str(tmp_path / "no-such-model.pt"),
        STEDLOOP_OBJECTIVES__NAMES='["quality"]',
    )
    try:
        with Client(ready["request_address"]) as client:
            deadline = time.monotonic() + 60
            while client.call("status")["scorer"]["state"] in ("idle", "loading"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            scorer = client.call("status")["scorer"]
            assert scorer["state"] == "failed" and "no-such-model" in scorer["error"]
            with pytest.raises(DaemonError) as info:
                client.call("session.start", budget_frames=1)
            assert info.value.code == "unavailable"
            ok = client.call("session.start", budget_frames=1, objectives=["resolution"])
            assert ok["objectives"] == ["resolution"]
    finally:
        assert stop_daemon(process) == 0
