"""The protocol layer in isolation: decoding, validation, envelopes, replies, event buffer."""

from __future__ import annotations

import json

import pytest

from stedloop.server.events import EventBus
from stedloop.server.handlers import METHODS, validate_params
from stedloop.server.replies import ReplyCache, client_scope, fingerprint
from stedloop.wire.protocol import (
    ERROR_CODES,
    ProtocolError,
    decode_request,
    encode,
    split_envelope,
)

CAP = 4096


def _code(payload: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_request(payload, CAP)
    return info.value.code


def test_valid_request_is_decoded() -> None:
    request = decode_request(b'{"v": 1, "id": "a1", "method": "ping", "params": {}}', CAP)
    assert (request.v, request.id, request.method, request.params) == (1, "a1", "ping", {})
    assert decode_request(b'{"v":1,"id":7,"method":"status"}', CAP).params == {}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"[1, 2]", "bad_json"),
        (b'{"v": 1, "id": "x", "method": "ping", "params": NaN}', "bad_json"),
        (b"[" * 100_000 + b"]" * 100_000, "too_large"),
        (b'{"v": 1, "method": "ping"}', "bad_request"),
        (b'{"v": 1, "id": "x", "method": "ping", "extra": 1}', "bad_request"),
        (b'{"v": "1", "id": "x", "method": "ping"}', "bad_request"),
        (b'{"v": 1, "id": true, "method": "ping"}', "bad_request"),
        (b'{"v": 1, "id": 1.5, "method": "ping"}', "bad_request"),
        (b'{"v": 1, "id": "x", "method": "ping", "params": []}', "bad_request"),
        (b'{"v": 1, "id": "", "method": "ping"}', "bad_request"),
        (b'{"v": 2, "id": "x", "method": "ping"}', "unsupported_version"),
    ],
)
def test_bad_messages_get_their_code(payload: bytes, code: str) -> None:
    assert _code(payload) == code


def test_deep_nesting_within_the_cap_is_bad_json_not_a_crash() -> None:
    deep = b'{"v":1,"id":"x","method":"ping","params":' + b"[" * 1900 + b"]" * 1900 + b"}"
    assert len(deep) < CAP
    assert _code(deep) in ("bad_json", "bad_request")


def test_error_reply_echoes_a_usable_id() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_request(b'{"v": 1, "id": "abc", "method": 5}', CAP)
    assert info.value.request_id == "abc"


def test_method_params_are_strict() -> None:
    assert validate_params("session.get", {"session_id": "s1"}, 1).session_id == "s1"
    for params in ({"session_id": 5}, {}, {"session_id": "s", "bogus": 1}):
        with pytest.raises(ProtocolError) as info:
            validate_params("session.get", params, 1)
        assert info.value.code == "invalid_params"
    with pytest.raises(ProtocolError) as info:
        validate_params("events.since", {"seq": "3"}, 1)
    assert "seq" in info.value.message
    with pytest.raises(ProtocolError) as info:
        validate_params("rm -rf", {}, 1)
    assert info.value.code == "unknown_method"
    assert "session.start" in info.value.message


def test_every_method_and_code_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    for method in METHODS:
        assert f"`{method}`" in doc, method
    for code in ERROR_CODES:
        assert f"`{code}`" in doc, code


def test_envelopes_of_req_and_dealer() -> None:
    assert split_envelope([b"", b"{}"]) == ([b""], [b"{}"])
    assert split_envelope([b"{}"]) == ([], [b"{}"])
    assert split_envelope([b"hop", b"", b"{}"]) == ([b"hop", b""], [b"{}"])
    assert split_envelope([b"a", b"b"]) == ([], [b"a", b"b"])


def test_encode_turns_non_finite_numbers_into_null() -> None:
    assert json.loads(encode({"a": float("nan"), "b": [float("inf"), 1.0]})) == {
        "a": None,
        "b": [None, 1.0],
    }


def test_reply_cache_same_id_same_reply_and_conflicts() -> None:
    cache = ReplyCache(size=16)
    fp = fingerprint("session.start", {"budget_frames": 3})
    me = client_scope(None, "a-secret-of-this-client", b"\x00conn1")
    assert cache.lookup(me, "r1", fp) is None
    cache.store(me, "r1", fp, b"reply")
    assert cache.lookup(me, "r1", fp) == b"reply"
    assert cache.lookup(me, "r1", fingerprint("session.start", {"budget_frames": 4})) is False
    assert cache.lookup(me, 1, fp) is None  # the int 1 and the string "1" are different ids
    for i in range(40):
        cache.store(me, f"x{i}", fp, b"r")
    assert len(cache) == 16
    assert cache.lookup(me, "r1", fp) is None  # bounded: the oldest went


def test_reply_cache_is_scoped_by_client() -> None:
    cache = ReplyCache(size=16)
    fp = fingerprint("session.start", {"budget_frames": 3})
    me = client_scope(None, "a-secret-of-this-client", b"\x00conn1")
    cache.store(me, "r1", fp, b"my reply with my token")
    # The same client after a reconnect (new routing id, same secret) finds its reply.
    assert cache.lookup(client_scope(None, "a-secret-of-this-client", b"\x00conn2"), "r1", fp)
    # Anyone else, with the same id and the same request, finds nothing.
    others = [
        client_scope(None, "another-clients-secret", b"\x00conn1"),
        client_scope(None, None, b"\x00conn1"),  # same connection, no secret
        client_scope("curve-key-of-someone", "a-secret-of-this-client", b"\x00conn1"),
    ]
    for scope in others:
        assert cache.lookup(scope, "r1", fp) is None, scope
    # Without a secret, a client is its connection.
    bare = client_scope(None, None, b"\x00conn3")
    cache.store(bare, 1, fp, b"r")
    assert cache.lookup(bare, 1, fp) == b"r"
    assert cache.lookup(client_scope(None, None, b"\x00conn4"), 1, fp) is None
    assert "a-secret-of-this-client" not in me  # kept hashed


def test_client_id_is_an_optional_secret_in_the_envelope() -> None:
    good = b'{"v":1,"id":"r1","client_id":"Zx_9-abcdefghijklmnop","method":"ping"}'
    assert decode_request(good, CAP).client_id == "Zx_9-abcdefghijklmnop"
    assert decode_request(b'{"v":1,"id":"r1","method":"ping"}', CAP).client_id is None
    for bad in (b'"short"', b'"has a space in it, long enough"', b"17", b'"' + b"x" * 129 + b'"'):
        payload = b'{"v":1,"id":"r1","method":"ping","client_id":' + bad + b"}"
        with pytest.raises(ProtocolError) as info:
            decode_request(payload, CAP)
        assert info.value.code == "bad_request" and "client_id" in info.value.message


def test_deeply_nested_or_huge_params_are_invalid_params_not_internal() -> None:
    nested: dict = {}
    for _ in range(5000):
        nested = {"x": nested}
    with pytest.raises(ProtocolError) as info:
        validate_params("session.start", {"overrides": {"optimizer": nested}}, "r1")
    assert info.value.code == "invalid_params"
    assert "'overrides'" in info.value.message and "nested" in info.value.message
    assert info.value.request_id == "r1"
    with pytest.raises(ProtocolError) as info:
        validate_params("session.start", {"overrides": {"params": [[0]] * 20_000}}, 1)
    assert info.value.code == "invalid_params" and "values" in info.value.message
    # What a real override looks like still passes.
    ok = {"overrides": {"params": {"depletion_mw": {"max": 100.0}}, "session": {"seed": 1}}}
    assert validate_params("session.start", ok, 1).overrides == ok["overrides"]


def test_event_bus_numbers_buffers_and_reports_missed() -> None:
    bus = EventBus("boot", buffer_size=100)
    for i in range(250):
        bus.publish("frame", {"i": i}, session_id="s")
    page = bus.since(0, limit=10)
    assert page["first_available_seq"] == 151
    assert page["missed"] == 150
    assert [e["seq"] for e in page["events"]] == list(range(151, 161))
    assert page["more"] is True
    tail = bus.since(245)
    assert [e["data"]["i"] for e in tail["events"]] == [245, 246, 247, 248, 249]
    assert tail["more"] is False and tail["missed"] == 0
    assert bus.since(250)["events"] == []
    with pytest.raises(ValueError):
        bus.publish("nonsense", {})


def test_error_codes_are_closed() -> None:
    with pytest.raises(ValueError):
        ProtocolError("made_up", "x")
