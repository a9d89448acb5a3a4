"""One process drives a microscope: a second driver beside a running one is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stedloop.client.local_daemon import start_daemon, stop_daemon
from stedloop.config import load_config
from stedloop.instrument import InstrumentBusy, claim_instrument

STEDLOOP = [sys.executable, "-m", "stedloop.cli.main"]
SITE = """
[objectives]
names = ["resolution"]
[optimizer]
n_candidates = 200
[drivers.simulator]
field_px = 64
sample_fields = 4
"""


def optimize(home: Path, site: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STEDLOOP_HOME": str(home), "STEDLOOP_CONFIG": str(site)}
    return subprocess.run(
        [*STEDLOOP, "optimize", "--budget", "1", "--seed", "1", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_optimize_beside_a_running_daemon_is_refused_unless_shared(
    tmp_path: Path, isolated_home: Path
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(SITE)
    daemon, _ = start_daemon(isolated_home, {"STEDLOOP_CONFIG": str(site)})
    try:
        refused = optimize(isolated_home, site)
        assert refused.returncode == 2, refused.stderr
        assert "Traceback" not in refused.stderr
        assert "simulator driver is in use by `stedloop serve" in refused.stderr
        assert f"pid {daemon.pid}" in refused.stderr and "--share-driver" in refused.stderr
        assert not (isolated_home / "sessions").exists() or not any(
            (isolated_home / "sessions").iterdir()
        )
        shared = optimize(isolated_home, site, "--share-driver")
        assert shared.returncode == 0, shared.stderr
    finally:
        daemon.send_signal(signal.SIGKILL)  # a crash must not leave the instrument claimed
        daemon.wait(10)
    after_crash = optimize(isolated_home, site)
    assert after_crash.returncode == 0, after_crash.stderr


def test_a_second_daemon_on_the_same_driver_is_refused(tmp_path: Path, isolated_home: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(SITE)
    claim = claim_instrument(load_config(site).config, "`stedloop optimize` in a test")
    try:
        with pytest.raises(RuntimeError, match="exited with code 2 before it was ready"):
            start_daemon(isolated_home, {"STEDLOOP_CONFIG": str(site)})
    finally:
        claim.release()
    log = (isolated_home / "daemon.log").read_text()
    assert "in use by `stedloop optimize` in a test" in log and "Traceback" not in log
    daemon, _ = start_daemon(isolated_home, {"STEDLOOP_CONFIG": str(site)})
    assert stop_daemon(daemon) == 0


def test_claims_are_per_driver_and_released(isolated_home: Path) -> None:
    simulator = load_config().config
    first = claim_instrument(simulator, "first")
    with pytest.raises(InstrumentBusy, match=r"in use by first \(pid \d+\)"):
        claim_instrument(simulator, "second")
    other_driver = load_config(overrides={"driver": {"name": "imspector"}}).config
    claim_instrument(other_driver, "imspector user").release()
    first.release()
    claim_instrument(simulator, "second").release()


def test_doctor_does_not_touch_a_driver_another_process_holds(
    tmp_path: Path, isolated_home: Path
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(SITE)
    claim = claim_instrument(load_config(site).config, "`stedloop serve`")
    try:
        env = {**os.environ, "STEDLOOP_HOME": str(isolated_home), "STEDLOOP_CONFIG": str(site)}
        doctor = subprocess.run(
            [*STEDLOOP, "doctor"], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        claim.release()
    (line,) = [line for line in doctor.stdout.splitlines() if "simulator:" in line]
    assert "not touched" in line and "in use by `stedloop serve`" in line


def test_an_orphaned_worker_keeps_the_instrument_claimed_until_it_has_made_it_safe(
    tmp_path: Path, isolated_home: Path
) -> None:
    import time

    from stedloop.client import Client, DaemonError
    from tests.worker_spy import install_spy_plugin, read_spy_log

    pythonpath = install_spy_plugin(tmp_path / "plugins")
    log = tmp_path / "spy.log"
    site = tmp_path / "site.toml"
    site.write_text(
        '[driver]\nname = "spy"\nin_worker = true\n'
        f'[drivers.spy]\nlog_path = "{log}"\nacquire_s = 8.0\nhonour_abort = false\n'
        '[objectives]\nnames = ["resolution"]\n[worker]\nabort_grace_period_s = 2.0\n'
    )
    daemon, ready = start_daemon(
        isolated_home, {"STEDLOOP_CONFIG": str(site), "PYTHONPATH": pythonpath}
    )
    try:
        with Client(ready["request_address"], timeout_s=10) as client:
            while True:
                try:
                    client.call("session.start", budget_frames=2)
                    break
                except DaemonError as exc:
                    assert exc.code == "busy"
                    time.sleep(0.1)
        deadline = time.monotonic() + 60
        while "acquire_start" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
    config = load_config(site).config
    # The worker ignores the abort for its 2 s grace period, then makes the lasers safe.
    with pytest.raises(InstrumentBusy):
        claim_instrument(config, "`stedloop optimize` too early")
    deadline = time.monotonic() + 20

    def safe_after_the_frame_started() -> bool:
        names = [e.name for e in read_spy_log(log)]
        return "safe_state" in names[names.index("acquire_start") :]

    while not safe_after_the_frame_started():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    while True:  # free once the worker has exited
        try:
            claim_instrument(config, "`stedloop optimize` after").release()
            break
        except InstrumentBusy:
            assert time.monotonic() < deadline
            time.sleep(0.05)
