"""Clients of one real daemon (subprocess on free loopback ports) do not see each other's
replies, ids are matched exactly, and every wrong input or missing daemon is answered at once.

Covers issue 14 items 5 (reply and idempotency caches scoped by client), 9 (exact session ids
on the protocol) and the daemon/client parts of 11 (addresses, deep overrides, `watch` of an
unknown or ended session, the wait when no daemon answers).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from cli_helpers import run_stedloop

from stedloop.client import Client, DaemonError, DaemonUnreachable
from stedloop.client.local_daemon import start_daemon, stop_daemon
from stedloop.store import SessionStore
from stedloop.store import ledger as L

SITE = """
[objectives]
names = ["resolution"]
[session]
budget_frames = 2
[drivers.simulator]
field_px = 64
sample_fields = 16
acquire_delay_s = 0.1
"""


#: How a ledger describes the resolution objective (name, unit, direction).
RESOLUTION = {"name": "resolution", "unit": "nm", "direction": "minimize"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Path]]:
    """One daemon for the module; each test leaves it without a running session."""
    home = tmp_path_factory.mktemp("clients") / "home"
    home.mkdir()
    (home / "site.toml").write_text(SITE)
    process, ready = start_daemon(home, {"STEDLOOP_CONFIG": str(home / "site.toml")})
    yield ready, home
    assert stop_daemon(process) == 0


def cli_env(home: Path) -> dict[str, str]:
    return {"STEDLOOP_HOME": str(home), "STEDLOOP_CONFIG": str(home / "site.toml")}


def end_session(client: Client, ready: dict[str, Any], session_id: str, token: str) -> None:
    """Stop a session (if it still runs) and wait for its last event."""
    try:
        client.call("session.stop", session_id=session_id, token=token, abort=True)
    except DaemonError as exc:
        assert exc.code == "conflict"  # it had ended already
    wait_ended(client, ready, session_id)


def wait_ended(client: Client, ready: dict[str, Any], session_id: str) -> None:
    for event in client.follow(ready["event_address"], since_seq=0, idle_s=0.2):
        if (
            event.get("session_id") == session_id
            and event["topic"] == "session"
            and event["data"].get("state") in ("finished", "stopped", "failed")
        ):
            return


def raw_dealer(address: str) -> zmq.Socket:
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(address)
    return dealer


def raw(dealer: zmq.Socket, message: dict[str, Any]) -> dict[str, Any]:
    dealer.send_multipart([b"", json.dumps(message).encode()])
    assert dealer.poll(10_000), "no reply"
    return json.loads(dealer.recv_multipart()[-1])


# -- item 5: replies and idempotency records belong to one client ---------------------------


@pytest.mark.parametrize("request_id", ["r1", 1])
def test_another_client_reusing_a_request_id_never_gets_the_reply_or_token(
    daemon: Any, request_id: Any
) -> None:
    ready, _home = daemon
    address = ready["request_address"]
    start = {"budget_frames": 500}
    with Client(address) as owner, Client(address) as other:
        first = owner.request("session.start", start, request_id=request_id)
        assert first["ok"], first
        token = first["result"]["token"]
        try:
            # Another Client (its own client_id), and a bare socket without one: same id,
            # same request. Each is handled as its own request: a session runs, so conflict.
            second = other.request("session.start", start, request_id=request_id)
            dealer = raw_dealer(address)
            try:
                bare = raw(
                    dealer, {"v": 1, "id": request_id, "method": "session.start", "params": start}
                )
            finally:
                dealer.close(0)
            for reply in (second, bare):
                assert reply["ok"] is False and reply["error"]["code"] == "conflict", reply
                assert token not in json.dumps(reply)
            # Without the token the other client cannot pause or stop the session.
            with pytest.raises(DaemonError) as info:
                other.call("session.pause", session_id=first["result"]["session_id"], token="r1")
            assert info.value.code == "forbidden"
            # The owner retrying, also after a reconnect (new ZeroMQ identity), gets its reply.
            assert owner.request("session.start", start, request_id=request_id) == first
            owner.close()
            assert owner.request("session.start", start, request_id=request_id) == first
        finally:
            end_session(owner, ready, first["result"]["session_id"], token)


def test_another_client_reusing_an_idempotency_key_gets_its_own_session(daemon: Any) -> None:
    ready, _home = daemon
    address = ready["request_address"]
    with Client(address) as owner, Client(address) as other:
        mine = owner.call("session.start", budget_frames=1, idempotency_key="my-run-1")
        end_session(owner, ready, mine["session_id"], mine["token"])
        theirs = other.call("session.start", budget_frames=1, idempotency_key="my-run-1")
        try:
            assert theirs["session_id"] != mine["session_id"]
            assert theirs["token"] != mine["token"]
            # The owner repeating its start (new request id, same key) gets its own result.
            assert owner.call("session.start", budget_frames=1, idempotency_key="my-run-1") == mine
        finally:
            end_session(other, ready, theirs["session_id"], theirs["token"])
        # And the second client's record is its own too.
        again = other.call("session.start", budget_frames=1, idempotency_key="my-run-1")
        assert again == theirs


# -- item 9: exact ids on the protocol --------------------------------------------------------


def test_session_ids_are_exact_or_a_literal_prefix_on_every_method(daemon: Any) -> None:
    ready, _home = daemon
    with Client(ready["request_address"]) as client:
        sid = client.call("session.start", budget_frames=1, name="ids")["session_id"]
        wait_ended(client, ready, sid)  # its one frame recorded
        for pattern in ("*", "?" * len(sid), "2*", "[2]*", "**", "../sessions", sid + "*"):
            calls = [
                ("session.get", {"session_id": pattern}),
                ("frame.get", {"session_id": pattern, "frame": 0}),
                ("overview.get", {"session_id": pattern, "overview": 0}),
                ("session.start", {"resume": pattern}),
            ]
            for method, params in calls:
                with pytest.raises(DaemonError) as info:
                    client.call(method, **params)
                assert info.value.code == "not_found", (method, pattern, info.value)
                assert "is not a session id" in info.value.message
        exact = client.call("session.get", session_id=sid)
        assert exact["id"] == sid and exact["expanded_from"] is None
        # A unique prefix is allowed, and the reply says it was expanded.
        ids = [s["id"] for s in client.call("sessions.list")["sessions"]]
        prefix = next(
            sid[:n] for n in range(1, len(sid)) if sum(i.startswith(sid[:n]) for i in ids) == 1
        )
        got = client.call("session.get", session_id=prefix)
        assert got["id"] == sid and got["expanded_from"] == prefix
        frame = client.call("frame.get", session_id=prefix, frame=0)
        assert frame["session_id"] == sid and frame["expanded_from"] == prefix


# -- item 11: bad input and missing daemons, answered at once ---------------------------------


def test_deeply_nested_overrides_are_invalid_params_not_internal(daemon: Any) -> None:
    ready, _home = daemon
    nested: dict[str, Any] = {"max": 100.0}
    for _ in range(600):
        nested = {"x": nested}
    with Client(ready["request_address"]) as client:
        with pytest.raises(DaemonError) as info:
            client.call("session.start", overrides={"optimizer": nested})
        assert info.value.code == "invalid_params", info.value
        assert "nested" in info.value.message
        assert client.call("ping")["pong"] is True


def test_watch_answers_at_once_for_unknown_ended_and_interrupted_sessions(daemon: Any) -> None:
    ready, home = daemon
    env = cli_env(home)
    connect = ["--connect", ready["request_address"]]
    # Sessions this daemon never ran: their events are in no buffer.
    store = SessionStore(home / "sessions")
    finished = store.create({"objectives": [RESOLUTION], "seed": 1}, name="old")
    finished.ledger.append(L.FINISHED, {"reason": "budget"})
    finished.close()
    interrupted = store.create({"objectives": [RESOLUTION], "seed": 2}, name="crashed")
    interrupted.close()
    unknown = run_stedloop("watch", "20990101-000000-beef", *connect, env=env, timeout_s=30)
    assert unknown.returncode == 2 and "no session '20990101-000000-beef'" in unknown.stderr
    assert "not_found" in unknown.stderr and "Traceback" not in unknown.stderr
    pattern = run_stedloop("watch", "*", *connect, env=env, timeout_s=30)
    assert pattern.returncode == 2 and "is not a session id" in pattern.stderr
    ended = run_stedloop("watch", finished.id, *connect, env=env, timeout_s=30)
    assert ended.returncode == 0, ended.stderr
    assert f"session {finished.id} finished (budget)" in ended.stdout
    ended_json = run_stedloop("watch", finished.id, *connect, "--json", env=env, timeout_s=30)
    assert json.loads(ended_json.stdout.splitlines()[-1])["state"] == "finished"
    crashed = run_stedloop("watch", interrupted.id, *connect, env=env, timeout_s=30)
    assert crashed.returncode == 1 and "--resume" in crashed.stdout


def test_watch_of_a_session_that_ran_here_replays_its_events(daemon: Any) -> None:
    ready, home = daemon
    with Client(ready["request_address"]) as client:
        started = client.call("session.start", budget_frames=1)
        end_session(client, ready, started["session_id"], started["token"])
    sid = started["session_id"]
    watched = run_stedloop(
        "watch", sid[:-1], "--connect", ready["request_address"], "--json", env=cli_env(home)
    )
    assert watched.returncode == 0, watched.stderr
    last = json.loads(watched.stdout.splitlines()[-1])
    assert last["topic"] == "session" and last["session_id"] == sid
    assert last["data"]["state"] in ("finished", "stopped")
    assert f"is a prefix of session {sid}" in watched.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_no_daemon_is_said_at_once(tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    client = Client(address, timeout_s=30.0)
    started = time.monotonic()
    with client, pytest.raises(DaemonUnreachable) as info:
        client.call("status")
    assert time.monotonic() - started < 10.0  # refused connections: ~1 s, not the 30 s
    assert "nothing is listening" in info.value.message and address in info.value.message
    result = run_stedloop("status", "--connect", address, env={"STEDLOOP_HOME": str(tmp_path)})
    assert result.returncode == 2 and "nothing is listening" in result.stderr


def test_a_silent_daemon_is_waited_for_as_long_as_said_retries_included() -> None:
    router = zmq.Context.instance().socket(zmq.ROUTER)  # accepts, never answers
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        client = Client(f"tcp://127.0.0.1:{port}", timeout_s=1.0, retries=1)
        started = time.monotonic()
        with client, pytest.raises(DaemonUnreachable) as info:
            client.call("status")
        waited_s = time.monotonic() - started
        assert 0.9 < waited_s < 1.8, waited_s  # was 2 s: the timeout once per attempt
        assert "within 1 s" in info.value.message
        received = []
        while router.poll(100):
            received.append(router.recv_multipart())
        assert len(received) == 2  # the request and one resend, within the second
    finally:
        router.close(0)


@pytest.mark.parametrize("command", ["status", "serve"])
def test_a_bracketed_ipv4_address_is_one_clear_line(tmp_path: Path, command: str) -> None:
    address = "tcp://[127.0.0.1]:5999"
    option = "--connect" if command == "status" else "--request-address"
    result = run_stedloop(command, option, address, env={"STEDLOOP_HOME": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: address '{address}': an IPv4 address is written without brackets: "
        "tcp://127.0.0.1:5999"
    ]


def test_resume_by_prefix_after_a_crash_reuses_the_sessions_own_overrides(tmp_path: Path) -> None:
    """The daemon keeps a session's overrides in a file named by its id: a resume by prefix
    must find them (it looked for '<prefix>.json' and silently resumed with the defaults)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "site.toml").write_text(SITE)
    env = {"STEDLOOP_CONFIG": str(home / "site.toml")}
    process, ready = start_daemon(home, env)
    with Client(ready["request_address"]) as client:
        sid = client.call("session.start", budget_frames=7)["session_id"]
        deadline = time.monotonic() + 30
        while client.call("status")["session"]["frames"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    process.kill()
    process.wait(10)
    process, ready = start_daemon(home, env)
    try:
        with Client(ready["request_address"]) as client:
            with pytest.raises(DaemonError) as info:
                client.call("session.start", resume="../" + sid)
            assert info.value.code == "not_found"
            resumed = client.call("session.start", resume=sid[:-2])
            assert resumed["session_id"] == sid and resumed["expanded_from"] == sid[:-2]
            assert resumed["budget_frames"] == 7  # its own override, not the site's 2
            end_session(client, ready, sid, resumed["token"])
    finally:
        assert stop_daemon(process) == 0
