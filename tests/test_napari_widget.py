"""The napari dock widget against a real daemon subprocess on the simulator: it follows a
session (state, frames, scores, the last frame as a layer) and starts, pauses, resumes and
stops it with the CLI's token rules. Qt runs offscreen; the viewer is napari's
``ViewerModel`` (no OpenGL canvas on a headless machine)."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    pytest.importorskip(
        "napari", reason="napari is not installed (pip install -e '.[napari]' to run these tests)"
    )
    import napari.components
    from qtpy.QtWidgets import QApplication

from stedloop.client.local_daemon import start_daemon, stop_daemon
from stedloop.napari.daemon_panel import PanelState
from stedloop.napari.widget import LIVE_LAYER, DaemonWidget

SITE = """
[objectives]
names = ["resolution"]
[drivers.simulator]
field_px = 48
sample_fields = 16
acquire_delay_s = 0.2
"""


def wait_for(widget: DaemonWidget, done: Callable[[PanelState], bool], what: str) -> PanelState:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = widget.refresh()
        if done(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"no {what} within 60 s; last: {widget.state}")


def test_widget_follows_and_controls_a_daemon_session(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = QApplication.instance() or QApplication([])
    (isolated_home / "site.toml").write_text(SITE)
    process, ready = start_daemon(
        isolated_home, {"STEDLOOP_CONFIG": str(isolated_home / "site.toml")}
    )
    viewer = napari.components.ViewerModel()
    # poll_ms large: the test polls by hand (no event loop runs here)
    widget = DaemonWidget(viewer, address=ready["request_address"], poll_ms=3_600_000)
    try:
        assert widget.refresh().line() == "no session in this daemon"
        widget.budget.setValue(300)
        widget.control("start")
        assert widget.message_label.text().startswith("started ")
        sid = widget.message_label.text().split()[1]

        state = wait_for(widget, lambda s: (s.frames_done or 0) >= 2, "two frames")
        assert state.session_id == sid and state.budget_frames == 300
        assert state.best_score is not None and state.last_score is not None
        assert sid in widget.status_label.text() and "/300 frames" in widget.status_label.text()
        # the last frame's STED image is in the viewer, in µm
        live = viewer.layers[LIVE_LAYER]
        assert live.data.shape == (48, 48)
        assert tuple(live.scale) == pytest.approx((0.02, 0.02))
        assert [str(u) for u in live.units] == ["micrometer", "micrometer"]

        # another user's client (no saved token for this session) may not control it
        monkeypatch.setenv("STEDLOOP_HOME", str(tmp_path / "stranger"))
        widget.control("stop")
        assert "stop refused: no token for session" in widget.message_label.text()
        monkeypatch.setenv("STEDLOOP_HOME", str(isolated_home))

        widget.control("pause")
        assert widget.message_label.text().startswith("pause requested (")
        wait_for(widget, lambda s: s.state == "paused", "pause")
        widget.control("resume")
        wait_for(widget, lambda s: s.state == "running", "resume")
        widget.control("stop")
        assert widget.message_label.text().startswith("stop requested (")
        final = wait_for(widget, lambda s: s.state == "stopped", "stop")
        assert final.frames_done is not None and final.frames_done < 300
    finally:
        widget.close()
        widget.panel.close()
        assert stop_daemon(process) == 0
    del app


def test_a_daemon_that_does_not_answer_does_not_freeze_napari(isolated_home: Path) -> None:
    """Polling runs on its own thread: while the daemon does not answer (a socket that takes
    requests and never replies, so each poll waits out the client's 5 s timeout), the GUI
    thread keeps handling events, and the widget then says what went wrong."""
    import zmq

    app = QApplication.instance() or QApplication([])
    context = zmq.Context.instance()
    silent = context.socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    widget = DaemonWidget(None, address=f"tcp://127.0.0.1:{port}", poll_ms=100)
    try:
        longest_gap_s, last = 0.0, time.monotonic()
        deadline = last + 30
        while widget.state.error is None:
            app.processEvents()
            now = time.monotonic()
            longest_gap_s, last = max(longest_gap_s, now - last), now
            assert now < deadline, f"no error shown within 30 s: {widget.status_label.text()!r}"
            time.sleep(0.02)
        assert longest_gap_s < 2.0, longest_gap_s
        assert widget.status_label.text() == widget.state.line()
        assert "no reply from the daemon" in widget.status_label.text()
    finally:
        widget.close()
        widget.panel.close()
        silent.close()
    assert not widget._poller.is_alive()
    del app


def test_the_widget_is_in_the_plugin_manifest() -> None:
    """napari lists it under Plugins ▸ stedloop daemon, built by the manifest's command."""
    import npe2

    manager = npe2.PluginManager.instance()
    manager.discover()
    widgets = manager.get_manifest("stedloop").contributions.widgets or []
    assert [w.display_name for w in widgets] == ["stedloop daemon"]
    command = manager.get_command(widgets[0].command)
    assert command.python_name == "stedloop.napari.widget:DaemonWidget"
