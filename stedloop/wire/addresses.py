"""ZeroMQ endpoint addresses, checked before a socket sees them.

libzmq accepts some malformed endpoints silently (``tcp://[127.0.0.1]:5755`` connects to
nothing and waits forever) and refuses others with a bare ``Invalid argument``; the standard
library's URL parser raises on a bracketed IPv4 address. Every address a user gives goes
through ``check_address`` first, so a bad one is one clear line naming what to write.
"""

from __future__ import annotations

import ipaddress
import re

from stedloop.errors import ConfigError

TRANSPORTS = ("tcp", "ipc", "inproc")
#: A host name or a network interface name (``eth0``), as libzmq resolves them.
_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,252}[A-Za-z0-9])?$")
_EXAMPLE = "e.g. tcp://127.0.0.1:5755 or tcp://[::1]:5755"


def check_address(address: str, *, bind: bool) -> str:
    """``address`` unchanged when ZeroMQ can use it to bind (``bind``) or connect; else a
    ``ConfigError`` saying what is wrong. ``*`` (any interface, a free port) is for binding."""
    transport, sep, rest = address.partition("://")
    if not sep or transport not in TRANSPORTS:
        raise ConfigError(
            f"address {address!r}: expected {' / '.join(t + '://' for t in TRANSPORTS)}…, {_EXAMPLE}"
        )
    if not rest:
        raise ConfigError(f"address {address!r}: nothing after {transport}://, {_EXAMPLE}")
    if any(ch.isspace() or not ch.isprintable() for ch in rest):
        raise ConfigError(f"address {address!r}: spaces or control characters in an address")
    if transport == "tcp":
        _check_tcp(address, rest, bind)
    return address


def _check_tcp(address: str, rest: str, bind: bool) -> None:
    host, colon, port = rest.rpartition(":")
    if not colon or not host:
        raise ConfigError(f"address {address!r}: a tcp address is HOST:PORT, {_EXAMPLE}")
    _check_port(address, port, bind)
    if host.startswith("[") or host.endswith("]"):
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else None
        try:
            literal = ipaddress.ip_address(inner or "")
        except ValueError:
            raise ConfigError(
                f"address {address!r}: brackets hold an IPv6 address, e.g. tcp://[::1]:{port}"
            ) from None
        if literal.version == 4:
            raise ConfigError(
                f"address {address!r}: an IPv4 address is written without brackets: "
                f"tcp://{literal}:{port}"
            )
        return
    if host == "*":
        if not bind:
            raise ConfigError(
                f"address {address!r}: '*' (every interface) is for binding; connect to the "
                f"daemon's host, e.g. tcp://127.0.0.1:{port}"
            )
        return
    if ":" in host:
        raise ConfigError(
            f"address {address!r}: an IPv6 address goes in brackets: tcp://[{host}]:{port}"
        )
    if not _HOST_NAME.match(host):  # also matches IPv4 literals
        raise ConfigError(f"address {address!r}: {host!r} is not a host name or IP address")


def _check_port(address: str, port: str, bind: bool) -> None:
    if port == "*":
        if bind:
            return
        raise ConfigError(f"address {address!r}: port '*' (any free port) is for binding only")
    lowest = 0 if bind else 1  # binding port 0 lets the system choose, like '*'
    if not (port.isascii() and port.isdigit()) or not lowest <= int(port) <= 65535:
        raise ConfigError(f"address {address!r}: port {port!r} is not a number in {lowest}-65535")
