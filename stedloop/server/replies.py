"""Replies remembered by request id, so a retried state-changing request never acts twice."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any


def fingerprint(method: str, params: dict[str, Any]) -> str:
    """What a request asks for, independent of key order."""
    text = json.dumps([method, params], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ReplyCache:
    """Least-recently-used map: request id -> (request fingerprint, encoded reply)."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._entries: OrderedDict[Any, tuple[str, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, request_id: Any, print_: str) -> bytes | bool | None:
        """The cached reply; None if unseen; False if the id was used for another request."""
        key = (type(request_id).__name__, request_id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[1] if entry[0] == print_ else False

    def store(self, request_id: Any, print_: str, reply: bytes) -> None:
        key = (type(request_id).__name__, request_id)
        self._entries[key] = (print_, reply)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
