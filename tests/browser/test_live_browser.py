"""The live view in headless Chromium against a real daemon running a simulated session."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from browser_helpers import running_server

from stedloop.client import Client
from stedloop.client.local_daemon import start_daemon, stop_daemon
from stedloop.study.app import create_app

pytestmark = pytest.mark.browser

SITE = """
[objectives]
names = ["resolution", "signal_ratio"]
[session]
budget_frames = 6
[drivers.simulator]
field_px = 96
sample_fields = 16
acquire_delay_s = 0.3
"""


def test_live_page_updates_as_the_daemon_publishes(
    tmp_path: Path, new_page, screenshot_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    home.mkdir()
    (home / "site.toml").write_text(SITE)
    process, ready = start_daemon(home, {"STEDLOOP_CONFIG": str(home / "site.toml")})
    try:
        app = create_app(mode="live", live_address=ready["request_address"])
        with running_server(app) as base:
            page = new_page()
            page.goto(base + "/")  # redirects to /live
            page.wait_for_function(
                "document.getElementById('conn')?.textContent.startsWith('connected')"
            )
            assert page.inner_text("#session-line") == "No session yet."
            with Client(ready["request_address"]) as client:
                session_id = client.call("session.start", budget_frames=6)["session_id"]
            # Updates arrive while the session runs (pushed, no reload) ...
            page.wait_for_function(
                "document.getElementById('session-line')?.dataset.state === 'running'"
                " && document.querySelectorAll('#plot-objectives circle').length >= 3",
                timeout=60_000,
            )
            # ... until it finishes.
            page.wait_for_function(
                "document.getElementById('session-line')?.dataset.state === 'finished'",
                timeout=60_000,
            )
            page.wait_for_function("document.getElementById('frame')?.complete")
            assert session_id in page.inner_text("#session-line")
            assert "6 of 6 frames" in page.inner_text("#session-line")
            assert page.evaluate("document.getElementById('frame').naturalWidth") > 0
            assert "frame 5" in page.inner_text("#frame-caption")
            # One dot per defined value: two objectives + combined on the objective plot
            # (an objective may fail on a frame: its value is then absent, not plotted).
            state = page.evaluate("fetch('/api/live/state').then(r => r.json())")
            assert len(state["frames"]) == 6
            defined = sum(
                v is not None
                for f in state["frames"]
                for v in [
                    f["values"].get("resolution"),
                    f["values"].get("signal_ratio"),
                    f["combined"],
                ]
            )
            assert page.locator("#plot-objectives circle").count() == defined
            assert page.locator("#plot-params polyline").count() == 3
            assert page.locator("#plot-pareto circle[r='4.5']").count() == len(state["pareto"]) >= 1
            assert "on the front" in page.inner_text("#pareto-note")
            page.screenshot(path=str(screenshot_dir / "live_page.png"), full_page=True)
            # Each frame's step, the cold start and no overview (tiling) ...
            assert page.locator("#frames-table tbody tr").count() == 6
            assert "Cold start" in page.inner_text("#warm-line")
            assert page.is_hidden("#overview") and "tiling" in page.inner_text("#overview-caption")
            # ... then a session warm-started from it that picks its regions from overviews.
            with Client(ready["request_address"]) as client:
                warm_id = client.call(
                    "session.start",
                    budget_frames=3,
                    warm_start=[session_id],
                    overrides={"session": {"overview": {"enabled": True, "size_um": 8.0}}},
                )["session_id"]
            page.wait_for_function(
                f"document.getElementById('session-line')?.textContent.includes('{warm_id}')"
                " && document.getElementById('session-line').dataset.state === 'finished'"
                " && document.querySelectorAll('#frames-table tbody tr').length === 3",
                timeout=60_000,
            )
            page.wait_for_function("document.getElementById('overview')?.complete")
            assert f"Warm-started from {session_id}" in page.inner_text("#warm-line")
            state = page.evaluate("fetch('/api/live/state').then(r => r.json())")
            rows = page.locator("#frames-table tbody tr")
            for f, row in zip(reversed(state["frames"]), rows.all(), strict=True):  # newest first
                cells = row.locator("td").all_inner_texts()
                assert cells[:4] == [
                    str(f["frame"]),
                    f["status"],
                    f["source"],
                    f["prior_from"] or "–",
                ]
            assert any(f["prior_from"] for f in state["frames"])  # a setting from the first session
            assert page.evaluate("document.getElementById('overview').naturalWidth") > 0
            latest = state["overviews"][-1]
            caption = page.inner_text("#overview-caption")
            assert f"overview {latest['overview']}" in caption
            assert ", ".join(str(n) for n in latest["frames"]) in caption
            page.screenshot(path=str(screenshot_dir / "live_page_overview.png"), full_page=True)
            page.close()  # ends the event stream before the server stops
            app.state.live_hub.stop()  # no follower thread outlives the test
            assert not any(t.name == "live-follow" for t in threading.enumerate())
    finally:
        stop_daemon(process)
