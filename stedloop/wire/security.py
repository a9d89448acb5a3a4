"""Who may talk to the daemon: loopback by default, CURVE keys for anything else.

Key folder layout (``stedloop keys`` creates it; default ``<data dir>/keys``)::

    server.key, server.key_secret      the daemon's key pair (the public half goes to clients)
    client.key, client.key_secret      a client key pair for this machine's own CLI
    authorized_clients/*.key           public keys of every client allowed to connect

A daemon with CURVE on refuses any client whose public key is not in ``authorized_clients``.
Both ends use this module: the daemon (``stedloop.server``) and its clients
(``stedloop.client``, the CLI), which is why it lives in ``stedloop.wire`` and not in either.
"""

from __future__ import annotations

import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from stedloop.errors import ConfigError
from stedloop.paths import data_dir

if TYPE_CHECKING:
    from stedloop.config import LoadedConfig

SERVER_NAME = "server"
AUTHORIZED_DIR = "authorized_clients"
_LOCAL_TRANSPORTS = ("ipc", "inproc")


def is_loopback(address: str) -> bool:
    """True when ``address`` can only be reached from this machine."""
    transport, _, rest = address.partition("://")
    if transport in _LOCAL_TRANSPORTS:
        return True
    if transport != "tcp" or not rest:
        return False
    try:
        host = urlsplit(f"//{rest}").hostname or ""
    except ValueError:  # e.g. a bracketed IPv4 address; check_address names the problem
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface name, or a host name: reachable from outside
        return False


def check_binding(addresses: list[str], curve: bool) -> None:
    """Refuse to expose the daemon beyond loopback without CURVE."""
    exposed = [a for a in addresses if not is_loopback(a)]
    if exposed and not curve:
        raise ConfigError(
            f"refusing to bind {', '.join(exposed)} without CURVE: anything but loopback "
            "(127.0.0.1) needs encryption and client keys. Run `stedloop keys` and set "
            "daemon.keys_dir (or daemon.curve = true with the default keys folder)"
        )


def keys_dir_of(loaded: LoadedConfig) -> Path | None:
    """The CURVE key folder when CURVE is on (``daemon.keys_dir`` set or ``daemon.curve``)."""
    section = loaded.config.daemon
    if section.keys_dir is not None:
        return Path(section.keys_dir).expanduser()
    if section.curve:
        return data_dir(loaded.config.store.data_dir) / "keys"
    return None


@dataclass(frozen=True)
class CurveKeys:
    """What a client needs: the server's public key and its own key pair (z85 bytes)."""

    server_public: bytes
    public: bytes
    secret: bytes

    def apply(self, socket: zmq.Socket[bytes]) -> None:
        socket.curve_serverkey = self.server_public
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret


def _load_pair(path: Path) -> tuple[bytes, bytes]:
    secret_path = path.with_name(path.name + "_secret")
    if not secret_path.is_file():
        raise ConfigError(f"CURVE key {secret_path} is missing; create keys with `stedloop keys`")
    public, secret = zmq.auth.load_certificate(str(secret_path))
    if secret is None:
        raise ConfigError(f"{secret_path} holds no secret key")
    return public, secret


def create_keys(keys_dir: Path, client_name: str = "client") -> dict[str, Path]:
    """Create the server pair (kept if present) and a client pair, authorising the client."""
    if not client_name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"client name {client_name!r}: use letters, digits, - and _ only")
    if client_name == SERVER_NAME:
        raise ConfigError(f"client name {SERVER_NAME!r} is reserved for the daemon's keys")
    keys_dir.mkdir(parents=True, exist_ok=True)
    authorized = keys_dir / AUTHORIZED_DIR
    authorized.mkdir(exist_ok=True)
    server_public = keys_dir / f"{SERVER_NAME}.key"
    if not (keys_dir / f"{SERVER_NAME}.key_secret").is_file():
        zmq.auth.create_certificates(str(keys_dir), SERVER_NAME)
    client_public = keys_dir / f"{client_name}.key"
    if not (keys_dir / f"{client_name}.key_secret").is_file():
        zmq.auth.create_certificates(str(keys_dir), client_name)
    shutil.copyfile(client_public, authorized / client_public.name)
    for secret in keys_dir.glob("*.key_secret"):
        secret.chmod(0o600)
    return {
        "server_public": server_public,
        "client_public": client_public,
        "client_secret": keys_dir / f"{client_name}.key_secret",
        "authorized_dir": authorized,
    }


def load_server_keys(keys_dir: Path) -> tuple[bytes, bytes]:
    """The daemon's (public, secret) pair; ``ConfigError`` saying what to run if missing."""
    if not keys_dir.is_dir():
        raise ConfigError(f"CURVE keys folder {keys_dir} does not exist; run `stedloop keys`")
    authorized = keys_dir / AUTHORIZED_DIR
    if not authorized.is_dir() or not any(authorized.glob("*.key")):
        raise ConfigError(
            f"no authorised client keys in {authorized}; run `stedloop keys` or copy clients' "
            "public .key files there"
        )
    return _load_pair(keys_dir / f"{SERVER_NAME}.key")


def load_client_keys(keys_dir: Path, client_name: str = "client") -> CurveKeys:
    """Client keys from a folder holding ``server.key`` and ``<client_name>.key[_secret]``."""
    server_path = keys_dir / f"{SERVER_NAME}.key"
    if not server_path.is_file():
        raise ConfigError(f"the daemon's public key {server_path} is missing")
    server_public, _ = zmq.auth.load_certificate(str(server_path))
    public, secret = _load_pair(keys_dir / f"{client_name}.key")
    return CurveKeys(server_public=server_public, public=public, secret=secret)


def start_authenticator(
    context: zmq.Context[zmq.Socket[bytes]], keys_dir: Path
) -> ThreadAuthenticator:
    """ZAP handler admitting only clients whose public key is in ``authorized_clients``."""
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys_dir / AUTHORIZED_DIR))
    return auth


def make_server_socket(
    context: zmq.Context[zmq.Socket[bytes]], kind: int, server_keys: tuple[bytes, bytes] | None
) -> zmq.Socket[bytes]:
    socket = context.socket(kind)
    if server_keys is not None:
        socket.curve_publickey, socket.curve_secretkey = server_keys
        socket.curve_server = True
    return socket
