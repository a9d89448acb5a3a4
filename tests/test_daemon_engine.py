"""The daemon runs sessions in its session engine, a child process (server/engine.py).

Real daemons on loopback ports, with the spy driver (tests/worker_spy.py) in the engine's own
interpreter (``in_worker = false``): the spy logs each call with its process id, so the tests
see which process drove the instrument, and when.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stedloop.client import Client, DaemonBusy
from stedloop.client.local_daemon import start_daemon, stop_daemon
from stedloop.config import load_config
from stedloop.instrument import InstrumentBusy, claim_instrument
from stedloop.store import SessionStore
from tests.worker_helpers import process_gone, wait_for
from tests.worker_spy import install_spy_plugin, read_spy_log

SITE = """
[driver]
name = "spy"
[drivers.spy]
log_path = "{log}"
acquire_s = {acquire_s}
hold_gil_s = {hold_gil_s}
[objectives]
names = ["resolution"]
[session]
budget_frames = {budget}
[daemon]
shutdown_grace_s = {grace_s}
"""


@pytest.fixture
def daemon(tmp_path: Path, isolated_home: Path) -> Iterator[Any]:
    pythonpath = install_spy_plugin(tmp_path / "plugins")
    started: list[subprocess.Popen[bytes]] = []

    def run(
        acquire_s: float, hold_gil_s: float = 0.0, budget: int = 1, grace_s: float = 10.0
    ) -> tuple[Any, ...]:
        log = tmp_path / "spy.log"
        site = tmp_path / "site.toml"
        site.write_text(
            SITE.format(
                log=log, acquire_s=acquire_s, hold_gil_s=hold_gil_s, budget=budget, grace_s=grace_s
            )
        )
        env = {"STEDLOOP_CONFIG": str(site), "PYTHONPATH": pythonpath}
        process, ready = start_daemon(isolated_home, env)
        started.append(process)
        return process, ready, log, site

    yield run
    for process in started:
        if process.poll() is None:
            stop_daemon(process)


def _frame_started(log: Path, after_s: float = 0.0) -> int:
    """The pid that started a frame after ``after_s`` (0 while none has)."""
    starts = [e.pid for e in read_spy_log(log) if e.name == "acquire_start" and e.at_s > after_s]
    return starts[0] if starts else 0


def _claim_free(site: Path) -> bool:
    try:
        claim_instrument(load_config(site).config, "the next user").release()
    except InstrumentBusy:
        return False
    return True


def _start_when_ready(client: Client) -> dict[str, Any]:
    """``session.start``, retried while the daemon says ``busy`` (an engine restarting)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return dict(client.call("session.start", budget_frames=1))
        except DaemonBusy:
            assert time.monotonic() < deadline, "the fresh engine never became ready"
            time.sleep(0.1)


def test_status_answers_while_the_session_holds_its_interpreter(daemon: Any) -> None:
    # The frame holds its interpreter's GIL for 3 s in one C call. With the session in a
    # thread of the daemon, no request could be answered in that time.
    process, ready, log, _ = daemon(acquire_s=0.05, hold_gil_s=3.0)
    with Client(ready["request_address"], timeout_s=10) as client:
        client.call("session.start", budget_frames=1)
        wait_for(lambda: _frame_started(log) != 0, 60, "the frame to start")
        engine_pid = client.call("status")["daemon"]["engine_pid"]
        assert _frame_started(log) == engine_pid != process.pid  # the engine drives it
        round_trips_s = []
        while "gil_released" not in [e.name for e in read_spy_log(log)]:
            started = time.perf_counter()
            client.call("status")
            round_trips_s.append(time.perf_counter() - started)
            time.sleep(0.05)
    assert len(round_trips_s) >= 5, round_trips_s
    assert max(round_trips_s) < 1.0, f"a status took {max(round_trips_s):.2f} s"


def test_a_killed_engine_fails_its_session_and_a_fresh_one_makes_the_lasers_safe(
    daemon: Any,
) -> None:
    process, ready, log, _ = daemon(acquire_s=30.0)
    with Client(ready["request_address"], timeout_s=10) as client:
        first = client.call("session.start", budget_frames=1)
        wait_for(lambda: _frame_started(log) != 0, 60, "the frame to start")
        engine_pid = _frame_started(log)
        killed_at = time.time()
        os.kill(engine_pid, signal.SIGKILL)
        wait_for(lambda: client.call("status")["session"]["state"] == "failed", 30, "the failure")
        status = client.call("status")
        assert "session engine exited" in str(status["session"]["error"])
        assert first["session_id"] in status["interrupted"]  # its ledger has no end: resumable
        # A fresh engine connects the driver and commands it safe before anything else.
        wait_for(
            lambda: (
                [e.name for e in read_spy_log(log) if e.at_s > killed_at][:2]
                == ["connect", "safe_state"]
            ),
            60,
            "the fresh engine's connect and safe state",
        )
        fresh = {e.pid for e in read_spy_log(log) if e.at_s > killed_at}
        assert engine_pid not in fresh and process.pid not in fresh
        second = _start_when_ready(client)  # it runs sessions again
        assert second["session_id"] != first["session_id"]
        wait_for(lambda: _frame_started(log, killed_at) != 0, 60, "the next frame")
        assert _frame_started(log, killed_at) in fresh
    assert stop_daemon(process) == 0


def test_sigkill_of_the_daemon_makes_an_in_process_driver_safe_and_frees_the_instrument(
    daemon: Any, isolated_home: Path
) -> None:
    process, ready, log, site = daemon(acquire_s=30.0)
    with Client(ready["request_address"], timeout_s=10) as client:
        session_id = client.call("session.start", budget_frames=1)["session_id"]
    wait_for(lambda: _frame_started(log) != 0, 60, "the frame to start")
    engine_pid = _frame_started(log)
    killed_at = time.time()
    process.kill()
    process.wait(10)
    wait_for(lambda: process_gone(engine_pid), 15, "the engine to exit")
    after = [e.name for e in read_spy_log(log) if e.at_s >= killed_at]
    assert after == ["request_abort", "acquire_aborted", "safe_state"], after  # no retry
    assert {e.pid for e in read_spy_log(log) if e.at_s >= killed_at} == {engine_pid}
    wait_for(lambda: _claim_free(site), 10, "the instrument to be free again")
    # The run was cut off, as by the daemon's own death: the session is resumable.
    (info,) = SessionStore(isolated_home / "sessions").list()
    assert info.id == session_id and info.interrupted


def test_the_engine_holds_the_instrument_claim_as_long_as_it_lives(daemon: Any) -> None:
    process, ready, log, site = daemon(acquire_s=30.0)
    with Client(ready["request_address"], timeout_s=10) as client:
        client.call("session.start", budget_frames=1)
    wait_for(lambda: _frame_started(log) != 0, 60, "the frame to start")
    engine_pid = _frame_started(log)
    os.kill(engine_pid, signal.SIGSTOP)  # frozen: it cannot exit when the daemon dies
    try:
        process.kill()
        process.wait(10)
        with pytest.raises(InstrumentBusy):
            claim_instrument(load_config(site).config, "too early")
    finally:
        os.kill(engine_pid, signal.SIGCONT)
    wait_for(lambda: process_gone(engine_pid), 15, "the engine to exit")
    # (a process counts as gone once it is a zombie; its other threads may take a moment)
    wait_for(lambda: _claim_free(site), 10, "the instrument to be free")


def test_a_second_stop_signal_aborts_the_frame_the_first_let_finish(daemon: Any) -> None:
    process, ready, log, _ = daemon(acquire_s=60.0, grace_s=60.0)
    with Client(ready["request_address"], timeout_s=10) as client:
        client.call("session.start", budget_frames=1)
    wait_for(lambda: _frame_started(log) != 0, 60, "the frame to start")
    process.send_signal(signal.SIGTERM)  # the frame in flight may finish (60 s of grace)
    time.sleep(1.0)
    assert process.poll() is None and "request_abort" not in log.read_text()
    second_at = time.time()
    process.send_signal(signal.SIGTERM)  # now: abort it
    assert process.wait(20) == 0
    after = [e.name for e in read_spy_log(log) if e.at_s >= second_at]
    assert after[:2] == ["request_abort", "acquire_aborted"] and "safe_state" in after, after


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        ("disconnected", 2, "error: spy: no instrument answers at its address"),
        ("bug", 3, "error: unexpected EngineCrashed: RuntimeError: spy: a bug in the plugin"),
    ],
)
def test_a_driver_that_cannot_connect_stops_serve_with_one_line(
    tmp_path: Path, isolated_home: Path, error: str, code: int, line: str
) -> None:
    import sys

    pythonpath = install_spy_plugin(tmp_path / "plugins")
    site = tmp_path / "site.toml"
    site.write_text(
        f'[driver]\nname = "spy"\n[drivers.spy]\nlog_path = "{tmp_path / "spy.log"}"\n'
        f'connect_error = "{error}"\n'
    )
    env = {**os.environ, "STEDLOOP_CONFIG": str(site), "PYTHONPATH": pythonpath}
    env["STEDLOOP_DAEMON__REQUEST_ADDRESS"] = "tcp://127.0.0.1:*"
    env["STEDLOOP_DAEMON__EVENT_ADDRESS"] = "tcp://127.0.0.1:*"
    serve = subprocess.run(
        [sys.executable, "-m", "stedloop.cli.main", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode == code, serve.stderr
    assert serve.stderr.strip().splitlines()[-1].startswith(line), serve.stderr
    assert "engine_restart" not in serve.stderr  # a failed start is not mourned
    assert _claim_free(site)
