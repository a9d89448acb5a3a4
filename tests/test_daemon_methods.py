"""The daemon's methods come from one table: params model, handler and whether it mutates."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from stedloop.config import load_config
from stedloop.server import handlers
from stedloop.server.daemon import Daemon
from stedloop.server.handlers import METHODS, Method
from stedloop.server.methods import Params


class CountParams(Params):
    step: int = 1


def _ask(daemon: Daemon, method: str, request_id: str, **params: Any) -> dict[str, Any]:
    payload = {"v": 1, "id": request_id, "method": method, "params": params}
    return json.loads(daemon.handle(json.dumps(payload).encode(), b"peer"))


def test_one_table_entry_is_all_a_new_method_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def count(daemon: Daemon, params: CountParams, scope: str) -> dict[str, int]:
        calls.append(params.step)
        return {"calls": len(calls)}

    monkeypatch.setitem(METHODS, "test.count", Method(CountParams, count, mutating=True))
    monkeypatch.setitem(METHODS, "test.peek", Method(CountParams, count))
    daemon = Daemon(load_config())  # not serving: handle() alone, no driver, no sockets

    first = _ask(daemon, "test.count", "r1", step=2)
    assert first == {"id": "r1", "ok": True, "result": {"calls": 1}}
    # Mutating: the same request id again is answered from the cache, without acting.
    assert _ask(daemon, "test.count", "r1", step=2) == first
    assert _ask(daemon, "test.count", "r2", step=2)["result"] == {"calls": 2}
    # Read-only: answered fresh every time.
    assert _ask(daemon, "test.peek", "r3")["result"] == {"calls": 3}
    assert _ask(daemon, "test.peek", "r3")["result"] == {"calls": 4}
    assert calls == [2, 2, 1, 1]
    # The entry's params model validates, and the method is listed among the known ones.
    refused = _ask(daemon, "test.count", "r4", step="x")
    assert refused["error"]["code"] == "invalid_params"
    unknown = _ask(daemon, "test.nothing", "r5")
    assert unknown["error"]["code"] == "unknown_method"
    assert "test.count" in unknown["error"]["message"]


def test_the_documented_state_changing_methods_are_the_mutating_entries() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    found = re.search(r"Replies to the state-changing methods \(([^)]*)\)", doc)
    assert found is not None, "docs/protocol.md no longer names the state-changing methods"
    documented = set(re.findall(r"`([a-z.]+)`", found.group(1)))
    assert documented == {name for name, method in METHODS.items() if method.mutating}
    assert all(callable(method.handler) for method in handlers.METHODS.values())
