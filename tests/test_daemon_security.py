"""CURVE and binding rules on the real daemon: loopback only without keys, keys enforced."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from cli_helpers import run_stedloop

from stedloop.client import Client, DaemonUnreachable
from stedloop.client.local_daemon import start_daemon, stop_daemon
from stedloop.wire.security import create_keys

SITE = """
[objectives]
names = ["resolution"]
[drivers.simulator]
field_px = 64
"""


def spawn(home: Path, **env: str) -> tuple[subprocess.Popen[bytes], dict]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "site.toml").write_text(SITE)
    return start_daemon(home, {"STEDLOOP_CONFIG": str(home / "site.toml"), **env})


def test_curve_on_loopback_admits_only_authorised_keys(tmp_path: Path) -> None:
    home = tmp_path / "home"
    keys = tmp_path / "keys"
    create_keys(keys, "client")
    process, ready = spawn(home, STEDLOOP_DAEMON__KEYS_DIR=str(keys))
    try:
        assert ready["curve"] is True
        with Client(ready["request_address"], curve=keys) as client:
            assert client.call("status")["daemon"]["curve"] is True
            sid = client.call("session.start", budget_frames=1)["session_id"]
            for event in client.follow(ready["event_address"], since_seq=0, idle_s=0.2):
                if event["topic"] == "session" and event["data"]["state"] == "finished":
                    assert event["session_id"] == sid  # events flow over CURVE too
                    break
        # Refused handshakes are said at once and plainly, not after the timeout.
        plain = Client(ready["request_address"], timeout_s=30, retries=0)
        started = time.monotonic()
        with plain, pytest.raises(DaemonUnreachable) as info:
            plain.call("ping")
        assert "handshake" in info.value.message and "pass --keys DIR" in info.value.message
        other = tmp_path / "other-keys"
        create_keys(other, "client")  # a different server and client: not authorised
        (other / "server.key").write_bytes((keys / "server.key").read_bytes())
        stranger = Client(ready["request_address"], timeout_s=30, retries=0, curve=other)
        with stranger, pytest.raises(DaemonUnreachable) as info:
            stranger.call("ping")
        assert "refused this client's CURVE key" in info.value.message
        assert time.monotonic() - started < 10
    finally:
        assert stop_daemon(process) == 0


def test_with_curve_replies_are_scoped_by_the_client_key(tmp_path: Path) -> None:
    """Two authorised keys sending the same client_id and request id: the second never gets
    the first's reply (the key is part of the scope, proven by the handshake)."""
    home = tmp_path / "home"
    keys = tmp_path / "keys"
    create_keys(keys, "client")
    create_keys(keys, "other")
    second = tmp_path / "second"
    second.mkdir()
    for name in ("server.key", "other.key", "other.key_secret"):
        target = name.replace("other", "client")
        (second / target).write_bytes((keys / name).read_bytes())
    process, ready = spawn(home, STEDLOOP_DAEMON__KEYS_DIR=str(keys))
    try:
        with (
            Client(ready["request_address"], curve=keys) as owner,
            Client(ready["request_address"], curve=second) as other,
        ):
            other.client_id = owner.client_id  # even a leaked client_id is not enough
            first = owner.request("session.start", {"budget_frames": 1}, request_id="r1")
            assert first["ok"], first
            reply = other.request("session.start", {"budget_frames": 1}, request_id="r1")
            assert first["result"]["token"] not in json.dumps(reply)
            assert owner.request("session.start", {"budget_frames": 1}, request_id="r1") == first
    finally:
        assert stop_daemon(process) == 0


def test_binding_beyond_loopback_without_curve_is_refused(tmp_path: Path) -> None:
    result = run_stedloop(
        "serve", "--request-address", "tcp://0.0.0.0:0", env={"STEDLOOP_HOME": str(tmp_path)}
    )
    assert result.returncode == 2
    assert "refusing to bind tcp://0.0.0.0:0 without CURVE" in result.stderr
    assert "stedloop keys" in result.stderr
