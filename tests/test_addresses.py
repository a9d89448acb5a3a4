"""Endpoint addresses are checked before ZeroMQ sees them: one clear line, never a traceback
(libzmq takes ``tcp://[127.0.0.1]:P`` and then connects to nothing)."""

from __future__ import annotations

import pytest

from stedloop.errors import ConfigError
from stedloop.wire.addresses import check_address
from stedloop.wire.security import is_loopback


@pytest.mark.parametrize(
    "address",
    [
        "tcp://127.0.0.1:5755",
        "tcp://[::1]:5755",
        "tcp://localhost:5755",
        "tcp://daemon-host.lab.example:5755",
        "ipc:///tmp/stedloop.sock",
        "inproc://daemon",
    ],
)
def test_usable_addresses_pass(address: str) -> None:
    assert check_address(address, bind=False) == address
    assert check_address(address, bind=True) == address


@pytest.mark.parametrize(
    ("address", "bind", "says"),
    [
        ("tcp://[127.0.0.1]:5755", False, "tcp://127.0.0.1:5755"),
        ("tcp://[127.0.0.1]:5755", True, "without brackets"),
        ("tcp://[nonsense]:5755", False, "IPv6"),
        ("tcp://::1:5755", False, "tcp://[::1]:5755"),
        ("tcp://127.0.0.1", False, "HOST:PORT"),
        ("tcp://127.0.0.1:", False, "port"),
        ("tcp://127.0.0.1:0", False, "1-65535"),
        ("tcp://127.0.0.1:99999", True, "0-65535"),
        ("tcp://127.0.0.1:0x10", False, "port"),
        ("tcp://127.0.0.1:*", False, "binding only"),
        ("tcp://*:5755", False, "for binding"),
        ("tcp://bad host:5755", False, "spaces"),
        ("tcp://127.0.0.1:5755\x00", False, "control characters"),
        ("tcp://a/b:5755", False, "not a host name"),
        ("http://127.0.0.1:5755", False, "tcp://"),
        ("127.0.0.1:5755", False, "tcp://"),
        ("ipc://", False, "nothing after"),
    ],
)
def test_bad_addresses_are_one_clear_line(address: str, bind: bool, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_address(address, bind=bind)
    message = str(info.value)
    assert says in message and repr(address) in message and "\n" not in message


def test_bind_only_forms() -> None:
    assert check_address("tcp://*:5755", bind=True)
    assert check_address("tcp://127.0.0.1:*", bind=True)
    assert check_address("tcp://127.0.0.1:0", bind=True)


def test_is_loopback_does_not_raise_on_a_bracketed_ipv4() -> None:
    assert is_loopback("tcp://[127.0.0.1]:5755") is False
