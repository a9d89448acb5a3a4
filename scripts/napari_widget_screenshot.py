"""The widget screenshot in docs/napari.md: a simulator daemon, the stedloop dock widget
opened from the plugin menu (address from the config, via the environment here), a session
started from its button and followed for a few frames.

Headless: xvfb-run -a .venv/bin/python scripts/napari_widget_screenshot.py docs/images/napari_widget.png
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

SITE = """
[objectives]
names = ["resolution"]
[drivers.simulator]
field_px = 96
sample_fields = 16
acquire_delay_s = 0.2
"""


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "site.toml").write_text(SITE)
        os.environ["STEDLOOP_HOME"] = str(home)
        os.environ["STEDLOOP_CONFIG"] = str(home / "site.toml")
        from stedloop.client.local_daemon import start_daemon, stop_daemon

        process, ready = start_daemon(home, {})
        os.environ["STEDLOOP_DAEMON__REQUEST_ADDRESS"] = ready["request_address"]
        try:
            import napari
            from qtpy.QtWidgets import QApplication

            viewer = napari.Viewer(show=False)
            _, widget = viewer.window.add_plugin_dock_widget("stedloop", "stedloop daemon")
            widget.budget.setValue(40)
            widget.control("start")
            deadline = time.monotonic() + 60
            while (widget.refresh().frames_done or 0) < 4 and time.monotonic() < deadline:
                QApplication.processEvents()
                time.sleep(0.2)
            widget.control("pause")
            viewer.scale_bar.visible = True
            viewer.window.resize(1300, 600)
            viewer.reset_view()
            viewer.screenshot(str(out), canvas_only=False, flash=False)
            widget.control("stop")
            viewer.close()
        finally:
            stop_daemon(process)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
