"""Client pieces without a daemon: override parsing, event addresses, error mapping, tokens,
and `follow` filling gaps from events.since against a scripted peer on real sockets."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import typer
import zmq

from stedloop.cli.daemon_cmd import describe_event, event_address_for, parse_set
from stedloop.client import Client, DaemonBusy, RemoteParameterRejected
from stedloop.client.client import error_for
from stedloop.client.tokens import load_token, save_token
from stedloop.errors import ParameterRejected


def test_parse_set_nests_and_parses_json_values() -> None:
    assert parse_set(["session.budget_frames=20", "params.depletion_mw.max=200.5", "x.y=abc"]) == {
        "session": {"budget_frames": 20},
        "params": {"depletion_mw": {"max": 200.5}},
        "x": {"y": "abc"},
    }
    for bad in ("novalue", "=3", "a..b=1"):
        with pytest.raises(typer.Exit):
            parse_set([bad])


def test_event_address_follows_the_host_we_reached() -> None:
    assert event_address_for("tcp://lab-pc:5755", "tcp://0.0.0.0:5756") == "tcp://lab-pc:5756"
    assert event_address_for("tcp://lab-pc:5755", "tcp://10.0.0.2:5756") == "tcp://10.0.0.2:5756"
    assert event_address_for("tcp://[::1]:5755", "tcp://*:5756") == "tcp://[::1]:5756"


def test_error_codes_map_to_exception_classes() -> None:
    assert isinstance(error_for("busy", "x"), DaemonBusy)
    rejected = error_for("param_rejected", "too much")
    assert isinstance(rejected, RemoteParameterRejected) and isinstance(rejected, ParameterRejected)
    assert error_for("forbidden", "no").code == "forbidden"


def test_tokens_are_private_and_keyed_by_daemon(tmp_path: Path) -> None:
    path = save_token("tcp://a:1", "s1", "tok", root=tmp_path)
    save_token("tcp://b:1", "s1", "other", root=tmp_path)
    assert path.stat().st_mode & 0o077 == 0
    assert load_token("tcp://a:1", "s1", root=tmp_path) == "tok"
    assert load_token("tcp://b:1", "s1", root=tmp_path) == "other"
    assert load_token("tcp://a:1", "s2", root=tmp_path) is None


def test_describe_event_is_readable() -> None:
    line = describe_event(
        {
            "topic": "frame",
            "data": {
                "frame": 3,
                "params": {"dwell_time_us": 10.0, "excitation_uw": 5.0, "depletion_mw": 100.0},
                "values": {"quality": 0.5},
                "combined": 0.5,
                "best_score": 0.7,
            },
        }
    )
    assert line == "frame 3  dwell 10 µs  exc 5 µW  dep 100 mW  quality 0.5  score 0.5  best 0.7"


def test_follow_fills_gaps_and_skips_repeats(tmp_path: Path) -> None:
    """A scripted daemon: PUB skips seq 3 and repeats seq 2; events.since has them all."""
    context = zmq.Context.instance()
    router = context.socket(zmq.ROUTER)
    pub = context.socket(zmq.PUB)
    req_port = router.bind_to_random_port("tcp://127.0.0.1")
    pub_port = pub.bind_to_random_port("tcp://127.0.0.1")
    events = [
        {"seq": i, "topic": "frame", "boot_id": "b", "session_id": "s", "data": {"frame": i}}
        for i in range(1, 7)
    ]
    stop = threading.Event()
    available = [1]  # the newest seq the scripted daemon has "published"
    publisher: list[threading.Thread] = []

    def serve() -> None:
        while not stop.is_set():
            if not router.poll(50):
                continue
            identity, *rest = router.recv_multipart()
            request = json.loads(rest[-1])
            if request["method"] == "status":
                result: Any = {"daemon": {"boot_id": "b"}, "last_seq": 1}
            else:
                since = request["params"]["seq"]
                page = [e for e in events if since < e["seq"] <= available[0]]
                result = {
                    "events": page,
                    "last_seq": available[0],
                    "first_available_seq": 1,
                    "missed": 0,
                    "more": False,
                    "boot_id": "b",
                }
            reply = json.dumps({"id": request["id"], "ok": True, "result": result}).encode()
            router.send_multipart([identity, *rest[:-1], reply])
            if request["method"] == "events.since" and not publisher:
                publisher.append(threading.Thread(target=publish))
                publisher[0].start()

    def publish() -> None:
        stop.wait(0.4)  # after the subscription is connected and an idle catch-up ran
        for seq in (2, 2, 3, 4, 5, 6):
            available[0] = max(available[0], seq)
            if seq != 3:  # 3 never arrives live; 2 arrives twice
                pub.send_multipart([b"frame", json.dumps(events[seq - 1]).encode()])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with Client(f"tcp://127.0.0.1:{req_port}") as client:
            seen = []
            for event in client.follow(f"tcp://127.0.0.1:{pub_port}", since_seq=0, idle_s=0.2):
                seen.append(event["seq"])
                if event["seq"] == 6:
                    break
        assert seen == [1, 2, 3, 4, 5, 6]
    finally:
        stop.set()
        thread.join()
        for t in publisher:
            t.join()
        router.close(0)
        pub.close(0)
