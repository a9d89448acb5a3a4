"""Replies remembered per client and request id, so a retried state-changing request never
acts twice, and one client never receives another's reply (see ``client_scope``)."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any


def fingerprint(method: str, params: dict[str, Any]) -> str:
    """What a request asks for, independent of key order."""
    text = json.dumps([method, params], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def client_scope(curve_key: str | None, client_id: str | None, routing_id: bytes) -> str:
    """Who sent a request, as far as the daemon can tell; request ids and idempotency keys
    are only compared within one scope.

    The CURVE public key (when CURVE is on) is proven by the handshake. Within it, the
    client's ``client_id`` secret is stable across reconnects; a client without one is
    known only by its ZeroMQ connection (a reconnect is a new scope). The secret is kept
    hashed, so it never sits in memory or logs as given.
    """
    peer = f"curve:{curve_key}" if curve_key else "local"
    if client_id is not None:
        return f"{peer}|client:{hashlib.sha256(client_id.encode()).hexdigest()}"
    return f"{peer}|connection:{routing_id.hex()}"


class ReplyCache:
    """Least-recently-used map: (client scope, request id) -> (fingerprint, encoded reply)."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str, Any], tuple[str, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, scope: str, request_id: Any, print_: str) -> bytes | bool | None:
        """The cached reply; None if unseen in this scope; False if this scope used the id
        for another request."""
        key = (scope, type(request_id).__name__, request_id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[1] if entry[0] == print_ else False

    def store(self, scope: str, request_id: Any, print_: str, reply: bytes) -> None:
        key = (scope, type(request_id).__name__, request_id)
        self._entries[key] = (print_, reply)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
