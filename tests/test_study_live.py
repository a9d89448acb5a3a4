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


def test_live_view_shows_each_frames_origin_and_the_overview_with_its_regions(
    daemon: dict[str, Any],
) -> None:
    """Issue 19, item 5: a warm-started session that picks its regions from overviews shows
    where each frame's setting came from and the overview, drawn like the export's."""
    import base64

    import numpy as np

    from stedloop.store import SessionStore
    from stedloop.store.overview_figures import overview_events, overview_png
    from stedloop.store.overviews import read_overview
    from stedloop.study.live_overview import overview_event

    app = create_app(mode="live", live_address=daemon["request_address"])
    with TestClient(app) as web, Client(daemon["request_address"]) as client:
        wait_for(lambda: web.get("/api/live/state").json()["connected"])
        earlier = client.call("session.start", budget_frames=3)["session_id"]
        wait_for(lambda: client.call("session.get", session_id=earlier)["state"] == "finished")
        session_id = client.call(
            "session.start",
            budget_frames=4,
            warm_start=[earlier],
            overrides={"session": {"overview": {"enabled": True, "size_um": 6.0}}},
        )["session_id"]
        done = wait_for(
            lambda: (
                (s := web.get("/api/live/state").json())["session"]
                and s["session"]["id"] == session_id
                and s["session"]["state"] == "finished"
                and len(s["frames"]) == 4
                and s
            )
        )
        detail = client.call("session.get", session_id=session_id)
        # each frame's optimizer step and origin, as the ledger has them (learnt from events)
        assert [(f["source"], f["prior_from"]) for f in done["frames"]] == [
            (f["source"], f["prior_from"]) for f in detail["frames"]
        ]
        priors = [f for f in done["frames"] if f["source"] == "prior"]
        assert priors and all(f["prior_from"].startswith(f"{earlier}#") for f in priors)
        assert all(f["prior_from"] is None for f in done["frames"] if f["source"] != "prior")
        assert done["warm_start"]["sessions"] == [earlier]
        # the overviews, with the regions picked and the frames imaged on each
        (first, *_) = done["overviews"]
        assert done["overviews"] == detail["overviews"]
        assert first["overview"] == 0 and first["before_frame"] == 0
        # every frame was imaged on a picked region (the simulator's sample is patchy)
        assert sorted(n for o in done["overviews"] for n in o["frames"]) == [0, 1, 2, 3]
        for o in done["overviews"]:
            assert o["frames"] == sorted(n for r in o["regions"] for n in r["frames"])
        assert first["frames"] and all(r["width_um"] == 64 * 0.02 for r in first["regions"])
        # overview.get serves the TIFF's counts
        store = SessionStore(Path(detail["folder"]).parent)
        stored = read_overview(Path(detail["folder"]) / first["tiff"]).image
        reply = client.call("overview.get", session_id=session_id, overview=0)
        got = np.frombuffer(base64.b64decode(reply["data_b64"]), "<u2").reshape(reply["shape"])
        assert np.array_equal(got, stored) and reply["area"] == first["area"]
        # the live view's picture is the export's drawing, imaged regions marked
        png = web.get(f"/api/live/overview/{session_id}/0.png")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        record = store.open(session_id, readonly=True)
        try:
            (event, *_) = overview_events(record.history())
        finally:
            record.close()
        assert overview_event(first) == event
        bare = overview_png(event, stored, [], 20.0, f"session {session_id}")
        assert png.content != bare  # the frames' outlines and numbers are drawn
        assert web.get(f"/api/live/overview/{session_id}/7.png").status_code == 404
        assert web.get(f"/api/live/overview/{earlier}/0.png").status_code == 404

    # opened afterwards, the view backfills the same from the ledger
    late = create_app(mode="live", live_address=daemon["request_address"])
    with TestClient(late) as web:
        s = wait_for(lambda: (s := web.get("/api/live/state").json())["connected"] and s)
        assert s["session"]["id"] == session_id and s["overviews"] == done["overviews"]
        assert s["warm_start"] == done["warm_start"] and s["frames"] == done["frames"]
