"""Protocol fuzzing with hypothesis against the real daemon: every hostile message gets a
well-formed reply (or, over the hard size cap, is dropped) and the daemon keeps serving.

The benchmark (benchmarks/bench_daemon.py) sends 10,000+ such messages; this test sends a
few hundred so that it stays fast.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stedloop.client import Client
from stedloop.client.local_daemon import start_daemon, stop_daemon
from stedloop.server.handlers import METHODS
from stedloop.wire.protocol import ERROR_CODES

SITE = """
[objectives]
names = ["resolution"]
[session]
budget_frames = 1
[drivers.simulator]
field_px = 32
sample_fields = 32
"""

json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
methods = st.sampled_from(sorted(METHODS)) | st.text(max_size=20)
params = st.dictionaries(
    st.sampled_from(
        [
            "session_id",
            "token",
            "seq",
            "limit",
            "frame",
            "mode",
            "image",
            "overrides",
            "budget_frames",
            "objectives",
            "resume",
            "abort",
            "max_px",
            "idempotency_key",
            "x",
        ]
    ),
    json_value,
    max_size=4,
)
requests = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 1, 0, 2, "1", None]),
        "id": st.text(max_size=10) | st.integers(),
        "method": methods,
    },
    optional={"params": params | json_value, "junk": json_value},
)
hostile = (
    st.binary(max_size=300)
    | json_value.map(lambda v: json.dumps(v).encode())
    | requests.map(lambda r: json.dumps(r).encode())
    | requests.map(lambda r: json.dumps(r).encode()[:-3])  # truncated
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("fuzz") / "home"
    home.mkdir()
    (home / "site.toml").write_text(SITE)
    process: subprocess.Popen[bytes]
    process, ready = start_daemon(
        home,
        {"STEDLOOP_CONFIG": str(home / "site.toml"), "STEDLOOP_DAEMON__MAX_MESSAGE_BYTES": "4096"},
    )
    yield ready
    assert stop_daemon(process) == 0


@pytest.fixture(scope="module")
def dealer(daemon: dict[str, Any]) -> Iterator[zmq.Socket]:
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(daemon["request_address"])
    yield socket
    socket.close(0)


def check_reply(frames: list[bytes]) -> None:
    reply = json.loads(frames[-1])
    assert set(reply) in ({"id", "ok", "result"}, {"id", "ok", "error"})
    if not reply["ok"]:
        assert reply["error"]["code"] in ERROR_CODES
        assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(message=hostile)
def test_every_hostile_message_gets_a_well_formed_reply(dealer: zmq.Socket, message: bytes) -> None:
    dealer.send_multipart([b"", message])
    assert dealer.poll(5000), f"no reply to {message[:80]!r}"
    check_reply(dealer.recv_multipart())


def test_oversized_messages_and_the_daemon_still_serves(
    daemon: dict[str, Any], dealer: zmq.Socket
) -> None:
    dealer.send_multipart([b"", b"{" + b" " * 5000 + b"}"])
    assert dealer.poll(5000)
    assert json.loads(dealer.recv_multipart()[-1])["error"]["code"] == "too_large"
    with Client(daemon["request_address"]) as client:
        assert client.call("ping")["pong"] is True
        assert client.call("status")["daemon"]["protocol"] == 1
