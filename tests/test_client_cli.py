"""The client CLI against a real daemon: start, status, stop, watch, ls, saved tokens."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cli_helpers import run_stedloop

from stedloop.client.local_daemon import start_daemon, stop_daemon

SITE = """
[objectives]
names = ["resolution"]
[drivers.simulator]
field_px = 64
sample_fields = 16
acquire_delay_s = 0.2
"""


def spawn(home: Path) -> tuple[subprocess.Popen[bytes], dict]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "site.toml").write_text(SITE)
    return start_daemon(home, {"STEDLOOP_CONFIG": str(home / "site.toml")})


def test_cli_start_status_stop_ls_with_saved_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    process, ready = spawn(home)
    env = {"STEDLOOP_HOME": str(home), "STEDLOOP_CONFIG": str(home / "site.toml")}
    connect = ["--connect", ready["request_address"]]
    try:
        started = run_stedloop("start", *connect, "--budget", "300", "--json", env=env)
        assert started.returncode == 0, started.stderr
        sid = json.loads(started.stdout)["session_id"]
        status = run_stedloop("status", *connect, env=env)
        assert sid in status.stdout and "running" in status.stdout
        # Another user's client (no saved token) cannot stop it.
        stranger = run_stedloop("stop", sid, *connect, env={**env, "STEDLOOP_HOME": str(tmp_path)})
        assert stranger.returncode == 2 and "no token" in stranger.stderr
        wrong = run_stedloop("stop", sid, *connect, "--token", "guess", env=env)
        assert wrong.returncode == 2 and "forbidden" in wrong.stderr
        stopped = run_stedloop("stop", *connect, "--abort", env=env)
        assert stopped.returncode == 0, stopped.stderr
        watched = run_stedloop("watch", sid, *connect, "--json", env=env)
        assert watched.returncode == 0, watched.stderr
        last = json.loads(watched.stdout.splitlines()[-1])
        assert last["topic"] == "session" and last["data"]["state"] == "stopped"
        listed = run_stedloop("ls", *connect, "--json", env=env)
        assert [s["state"] for s in json.loads(listed.stdout)["sessions"]] == ["stopped"]
    finally:
        assert stop_daemon(process) == 0
    unreachable = run_stedloop(
        "status", "--connect", ready["request_address"], "--timeout", "0.3", env=env
    )
    assert unreachable.returncode == 2 and "nothing is listening" in unreachable.stderr


def test_cli_ls_lists_the_daemons_sessions_newest_first(tmp_path: Path) -> None:
    """`stedloop ls` agrees with `stedloop session ls`: newest first (the protocol's
    `sessions.list` stays oldest first, as docs/protocol.md says)."""
    from test_damaged_sessions import new_session

    from stedloop.client import Client
    from stedloop.store import SessionStore

    home = tmp_path / "home"
    store = SessionStore(home / "sessions")
    made = [new_session(store, budget=1) for _ in range(3)]  # oldest first
    process, ready = spawn(home)
    env = {"STEDLOOP_HOME": str(home), "STEDLOOP_CONFIG": str(home / "site.toml")}
    try:
        listed = run_stedloop("ls", "--connect", ready["request_address"], "--json", env=env)
        assert [s["id"] for s in json.loads(listed.stdout)["sessions"]] == made[::-1]
        text = run_stedloop("ls", "--connect", ready["request_address"], env=env).stdout
        assert [line.split()[0] for line in text.splitlines()] == made[::-1]
        with Client(ready["request_address"], timeout_s=10.0) as client:
            assert [s["id"] for s in client.call("sessions.list")["sessions"]] == made
    finally:
        assert stop_daemon(process) == 0


def test_cli_start_warns_when_the_budget_exceeds_the_sample(tmp_path: Path) -> None:
    """session.start answers with the warning (before the first frame) and `stedloop start`
    prints it: 300 frames asked of a 16 x 16-field sample."""
    home = tmp_path / "home"
    process, ready = spawn(home)
    env = {"STEDLOOP_HOME": str(home), "STEDLOOP_CONFIG": str(home / "site.toml")}
    connect = ["--connect", ready["request_address"]]
    try:
        started = run_stedloop("start", *connect, "--budget", "300", env=env)
        assert started.returncode == 0, started.stderr
        assert (
            "warning: the budget asks for 300 frames but the sample has only 256 fresh regions"
            in started.stderr
        )
        assert run_stedloop("stop", *connect, "--abort", env=env).returncode == 0
        within = run_stedloop("start", *connect, "--budget", "2", "--json", env=env)
        assert json.loads(within.stdout)["warnings"] == []
    finally:
        assert stop_daemon(process) == 0
