"""The live view's backend against a real daemon (subprocess) running a simulated session."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stedloop.client import Client
from stedloop.client.local_daemon import start_daemon, stop_daemon
from stedloop.objectives.pareto import pareto_front
from stedloop.study.app import create_app

SITE = """
[objectives]
names = ["resolution", "signal_ratio"]
[session]
budget_frames = 5
[drivers.simulator]
field_px = 64
sample_fields = 16
acquire_delay_s = 0.05
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[dict[str, Any]]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "site.toml").write_text(SITE)
    process, ready = start_daemon(home, {"STEDLOOP_CONFIG": str(home / "site.toml")})
    try:
        yield ready
    finally:
        stop_daemon(process)


def wait_for(predicate: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_live_state_follows_a_session(daemon: dict[str, Any]) -> None:
    app = create_app(mode="live", live_address=daemon["request_address"])
    with TestClient(app) as web:
        first = wait_for(lambda: (s := web.get("/api/live/state").json())["connected"] and s)
        assert first["session"] is None and first["frames"] == []
        with Client(daemon["request_address"]) as client:
            session_id = client.call("session.start", budget_frames=5)["session_id"]
            done = wait_for(
                lambda: (
                    (s := web.get("/api/live/state").json())["session"]
                    and s["session"]["state"] == "finished"
                    and len(s["frames"]) == 5
                    and s
                )
            )
            detail = client.call("session.get", session_id=session_id)
        assert done["session"]["id"] == session_id
        assert [f["frame"] for f in done["frames"]] == [0, 1, 2, 3, 4]
        # What the live view shows is what the daemon's ledger recorded.
        by_frame = {f["frame"]: f for f in detail["frames"]}
        for f in done["frames"]:
            assert f["combined"] == by_frame[f["frame"]]["combined"]
            assert f["params"] == by_frame[f["frame"]]["params"]
        assert done["directions"] == {"resolution": "minimize", "signal_ratio": "maximize"}
        expected = pareto_front(
            [f["frame"] for f in done["frames"]], [f["values"] for f in done["frames"]],
            {"resolution": "minimize", "signal_ratio": "maximize"},
        )  # fmt: skip
        assert done["pareto"] == expected and expected
        assert done["latest"]["frame"] == 4
        png = web.get(f"/api/live/frame/{session_id}/4.png")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        assert web.get(f"/api/live/frame/{session_id}/99.png").status_code == 404
        assert web.get("/", follow_redirects=False).headers["location"] == "/live"

    # A live view opened after the session ended backfills it from the ledger.
    late = create_app(mode="live", live_address=daemon["request_address"])
    with TestClient(late) as web:
        s = wait_for(lambda: (s := web.get("/api/live/state").json())["connected"] and s)
        assert s["session"]["id"] == session_id and len(s["frames"]) == 5


def test_live_view_without_daemon_says_so(tmp_path: Path) -> None:
    app = create_app(mode="live", live_address="tcp://127.0.0.1:9")  # nothing listens there
    app.state.live_hub.timeout_s = 0.3
    with TestClient(app) as web:
        s = wait_for(lambda: (s := web.get("/api/live/state").json())["error"] and s, 10)
        assert not s["connected"] and "no reply from the daemon" in s["error"]


def test_the_follower_stops_with_the_web_app_while_the_daemon_runs(
    daemon: dict[str, Any],
) -> None:
    """Shutting the web app down ends the follower thread even when no event comes."""
    import threading

    app = create_app(mode="live", live_address=daemon["request_address"])
    with TestClient(app) as web:
        wait_for(lambda: web.get("/api/live/state").json()["connected"])
    # TestClient's exit ran the app's shutdown; the daemon is idle, so no event arrives.
    wait_for(lambda: not any(t.name == "live-follow" for t in threading.enumerate()), 5.0)
