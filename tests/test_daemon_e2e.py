"""The real daemon as a subprocess on free loopback ports, driven by the client and raw pyzmq.

Sessions run on the simulator with small fields and the FRC resolution objective (no torch
import in the daemon), and the ledger on disk is checked afterwards.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from stedloop.client import Client, DaemonError
from stedloop.client.local_daemon import start_daemon, stop_daemon
from stedloop.store import SessionStore
from stedloop.store import ledger as L

SITE = """
[objectives]
names = ["resolution"]
[session]
budget_frames = 3
[drivers.simulator]
field_px = 64
sample_fields = 16
acquire_delay_s = {delay}
"""


def spawn(home: Path, delay_s: float = 0.0, **env: str) -> tuple[subprocess.Popen[bytes], dict]:
    home.mkdir(parents=True, exist_ok=True)
    site = home / "site.toml"
    site.write_text(SITE.format(delay=delay_s))
    return start_daemon(home, {"STEDLOOP_CONFIG": str(site), **env})


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[subprocess.Popen[bytes], dict, Path]]:
    """One daemon for this module (start-up costs seconds); each test leaves it idle."""
    home = tmp_path_factory.mktemp("daemon") / "home"
    process, ready = spawn(home, delay_s=0.15)
    yield process, ready, home
    assert stop_daemon(process) == 0


def follow_until_end(client: Client, ready: dict, session_id: str) -> list[dict[str, Any]]:
    events = []
    for event in client.follow(ready["event_address"], since_seq=0):
        events.append(event)
        data = event.get("data") or {}
        if (
            event.get("session_id") == session_id
            and event["topic"] == "session"
            and data.get("state") in ("finished", "stopped", "failed")
        ):
            return events
    raise AssertionError("event stream ended")


def raw(socket: zmq.Socket, message: Any, timeout_ms: int = 5000) -> dict[str, Any]:
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    if socket.type == zmq.REQ:
        socket.send(body)
    else:
        socket.send_multipart([body])
    assert socket.poll(timeout_ms), "no reply"
    return json.loads(socket.recv_multipart()[-1])


def test_session_runs_and_the_ledger_on_disk_agrees(daemon: Any) -> None:
    _process, ready, home = daemon
    with Client(ready["request_address"]) as client:
        started = client.call("session.start", budget_frames=3, name="e2e")
        session_id = started["session_id"]
        assert started["token"] and started["objectives"] == ["resolution"]
        events = follow_until_end(client, ready, session_id)
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, len(seqs) + 1))  # no gap, no repeat
        frames = [e for e in events if e["topic"] == "frame" and e["session_id"] == session_id]
        assert [f["data"]["frame"] for f in frames] == [0, 1, 2]
        assert events[-1]["data"]["state"] == "finished"

        detail = client.call("session.get", session_id=session_id)
        assert detail["state"] == "finished" and detail["frames_done"] == 3
        assert len(detail["frames"]) == 3
        thumb = client.call("frame.get", session_id=session_id, frame=1, max_px=32)
        image = np.frombuffer(base64.b64decode(thumb["data_b64"]), np.uint8)
        assert image.reshape(thumb["shape"]).shape == (32, 32) and image.max() == 255
        full = client.call("frame.get", session_id=session_id, frame=1, mode="full")
        counts = np.frombuffer(base64.b64decode(full["data_b64"]), "<u2").reshape(full["shape"])
        assert counts.shape == (64, 64) and counts.sum() > 0
        with pytest.raises(DaemonError) as info:
            client.call("frame.get", session_id=session_id, frame=99)
        assert info.value.code == "not_found"
        listed = client.call("sessions.list")["sessions"]
        assert session_id in [s["id"] for s in listed]

    store = SessionStore(home / "sessions")
    record = store.open(session_id, readonly=True)
    try:
        kinds = [e.kind for e in record.ledger.events()]
        history = record.history()
    finally:
        record.close()
    assert kinds[0] == L.CREATED and kinds[-1] == L.FINISHED
    assert sorted(history.frames) == [0, 1, 2]
    for frame in history.frames.values():
        assert (store.root / session_id / frame.tiff).is_file()
    # What the frame events said is what the ledger recorded.
    assert [f["data"]["combined"] for f in frames] == [
        history.frames[n].combined for n in (0, 1, 2)
    ]


def test_raw_req_and_dealer_sockets_are_clients(daemon: Any) -> None:
    _process, ready, _home = daemon
    context = zmq.Context.instance()
    req = context.socket(zmq.REQ)
    dealer = context.socket(zmq.DEALER)
    try:
        for s in (req, dealer):
            s.setsockopt(zmq.LINGER, 0)
            s.connect(ready["request_address"])
        reply = raw(req, {"v": 1, "id": "a", "method": "ping"})
        assert reply["ok"] and reply["id"] == "a" and reply["result"]["pong"] is True
        reply = raw(dealer, {"v": 1, "id": 2, "method": "status", "params": {}})
        assert reply["id"] == 2 and reply["result"]["daemon"]["protocol"] == 1
        dealer.send_multipart([b"", json.dumps({"v": 1, "id": 3, "method": "ping"}).encode()])
        assert dealer.poll(5000)
        frames = dealer.recv_multipart()
        assert frames[0] == b"" and json.loads(frames[1])["id"] == 3  # REQ-style framing kept
    finally:
        req.close(0)
        dealer.close(0)


def test_hostile_messages_get_error_replies_and_the_daemon_keeps_serving(daemon: Any) -> None:
    _process, ready, _home = daemon
    with Client(ready["request_address"]) as client:
        sessions_before = len(client.call("sessions.list")["sessions"])
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(ready["request_address"])
    cases: list[tuple[Any, str]] = [
        (b"{oops", "bad_json"),
        (b"\x00\xff\x10", "bad_json"),
        (b"42", "bad_json"),
        ({"v": 1, "id": "x", "method": "launch_missiles"}, "unknown_method"),
        (
            {"v": 1, "id": "x", "method": "session.get", "params": {"session_id": 7}},
            "invalid_params",
        ),
        ({"v": 1, "id": "x", "method": "events.since", "params": {"seq": -1}}, "invalid_params"),
        ({"v": 1, "id": "x", "method": "ping", "params": {"x": 1}}, "invalid_params"),
        ({"v": 1, "id": "x", "method": "ping", "junk": True}, "bad_request"),
        ({"v": 3, "id": "x", "method": "ping"}, "unsupported_version"),
        (
            {"v": 1, "id": "x", "method": "session.get", "params": {"session_id": "nope"}},
            "not_found",
        ),
        (
            b'{"v":1,"id":"big","method":"ping","params":{"p":"' + b"a" * 1_100_000 + b'"}}',
            "too_large",
        ),
        (
            {
                "v": 1,
                "id": "c1",
                "method": "session.start",
                "params": {"overrides": {"params": {"depletion_mw": {"max": 500.0}}}},
            },
            "param_rejected",
        ),
        (
            {
                "v": 1,
                "id": "c2",
                "method": "session.start",
                "params": {"overrides": {"safety": {"max_depletion_mw": 1000.0}}},
            },
            "forbidden",
        ),
        (
            {
                "v": 1,
                "id": "c3",
                "method": "session.start",
                "params": {"overrides": {"session": {"budget_frames": "many"}}},
            },
            "invalid_params",
        ),
        (
            {"v": 1, "id": "c4", "method": "session.start", "params": {"objectives": ["nope"]}},
            "invalid_params",
        ),
        (
            {"v": 1, "id": "c5", "method": "session.start", "params": {"resume": "missing"}},
            "not_found",
        ),
        (
            {
                "v": 1,
                "id": "c6",
                "method": "session.stop",
                "params": {"session_id": "x", "token": "t"},
            },
            "not_found",
        ),
    ]
    try:
        for message, code in cases:
            reply = raw(dealer, message)
            assert reply["ok"] is False, (message, reply)
            assert reply["error"]["code"] == code, (str(message)[:200], reply)
            assert reply["error"]["message"]
        dealer.send_multipart([b"one", b"two"])  # two payload frames
        assert dealer.poll(5000)
        assert json.loads(dealer.recv_multipart()[-1])["error"]["code"] == "bad_request"
        # Over ZeroMQ's hard cap (4x): the peer is dropped without a reply ...
        dealer.send_multipart([b"x" * (5 * 1_048_576)])
        assert dealer.poll(1000) == 0
    finally:
        dealer.close(0)
    # ... and everyone else is still served.
    with Client(ready["request_address"]) as client:
        assert client.call("ping")["pong"] is True
        status = client.call("status")
        assert status["session"] is None or status["session"]["state"] != "running"
        assert len(client.call("sessions.list")["sessions"]) == sessions_before


def test_repeated_request_id_gets_the_same_reply_and_never_a_second_session(daemon: Any) -> None:
    _process, ready, _home = daemon
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(ready["request_address"])
    with Client(ready["request_address"]) as client:
        sessions_before = len(client.call("sessions.list")["sessions"])
    start = {"v": 1, "id": "same-id", "method": "session.start", "params": {"budget_frames": 2}}
    try:
        first = raw(dealer, start)
        second = raw(dealer, start)
        assert first["ok"] and first == second
        other = raw(dealer, {**start, "params": {"budget_frames": 3}})
        assert other["error"]["code"] == "conflict"
        # A different id while the session runs: refused, not a second session.
        busy = raw(dealer, {**start, "id": "new-id"})
        assert busy["error"]["code"] == "conflict"
        # An idempotency key returns the first start's result under a new request id.
        with Client(ready["request_address"]) as client:
            follow_until_end(client, ready, first["result"]["session_id"])
            a = client.call("session.start", budget_frames=1, idempotency_key="k1")
            follow_until_end(client, ready, a["session_id"])
            b = client.call("session.start", budget_frames=1, idempotency_key="k1")
            assert a == b
            assert len(client.call("sessions.list")["sessions"]) == sessions_before + 2
    finally:
        dealer.close(0)


def test_only_the_token_holder_controls_a_session_and_status_stays_fast(daemon: Any) -> None:
    _process, ready, _home = daemon
    with Client(ready["request_address"]) as client:
        started = client.call("session.start", budget_frames=200)
        sid, token = started["session_id"], started["token"]
        for method in ("session.stop", "session.pause", "session.resume"):
            with pytest.raises(DaemonError) as info:
                client.call(method, session_id=sid, token="not-the-token")
            assert info.value.code == "forbidden"
        # While frames are being acquired, status answers in milliseconds.
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            client.call("status")
            times.append(time.perf_counter() - t0)
        assert sorted(times)[-2] < 0.05, times
        client.call("session.pause", session_id=sid, token=token)
        deadline = time.monotonic() + 10
        while client.call("status")["session"]["state"] != "paused":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        frames_paused = client.call("status")["session"]["frames"]
        time.sleep(0.5)
        assert client.call("status")["session"]["frames"] == frames_paused
        client.call("session.resume", session_id=sid, token=token)
        # The loop takes the resume at its next check: wait for it, or a quick stop would
        # overtake it (paused -> stopped, no "resumed" event, which is also correct).
        deadline = time.monotonic() + 10
        while client.call("status")["session"]["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.call("session.stop", session_id=sid, token=token, abort=True)
        events = follow_until_end(client, ready, sid)
        states = [
            e["data"].get("state")
            for e in events
            if e["topic"] == "session" and e["session_id"] == sid
        ]
        assert states[:3] == ["started", "paused", "resumed"] and states[-1] == "stopped"
        with pytest.raises(DaemonError) as info:
            client.call("session.stop", session_id=sid, token=token)
        assert info.value.code == "conflict"
