"""The napari dock widget: follow a running daemon's session and control it.

It polls the daemon's status once a second (``DaemonPanel``), shows the session's state,
frames done, last score and best so far, puts the last frame's STED image in a viewer layer
(``live STED``) when the frame file is on this machine, and has start, pause, resume and stop
buttons that follow the CLI's token rules. Loaded by napari only (Qt through qtpy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from stedloop.client import DaemonError
from stedloop.errors import StedloopError
from stedloop.napari.daemon_panel import ControlRefused, DaemonPanel, PanelState
from stedloop.store.frames import read_frame

LIVE_LAYER = "live STED"


class DaemonWidget(QWidget):
    def __init__(
        self,
        napari_viewer: Any = None,
        config_path: Path | None = None,
        address: str | None = None,
        poll_ms: int = 1000,
    ) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.panel = DaemonPanel(config_path, address)
        self.state = PanelState()
        self._shown_tiff: Path | None = None

        self.status_label = QLabel("connecting…")
        self.message_label = QLabel("")
        self.budget = QSpinBox()
        self.budget.setRange(1, 10_000)
        self.budget.setValue(30)
        self.budget.setPrefix("budget ")
        self.buttons: dict[str, QPushButton] = {}
        row = QHBoxLayout()
        row.addWidget(self.budget)
        for name in ("start", "pause", "resume", "stop"):
            button = QPushButton(name)
            button.clicked.connect(lambda _=False, n=name: self.control(n))
            self.buttons[name] = button
            row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"daemon {self.panel.address}"))
        layout.addWidget(self.status_label)
        layout.addLayout(row)
        layout.addWidget(self.message_label)

        self.timer = QTimer(self)
        self.timer.timeout.connect(self._on_timer)
        self.timer.start(poll_ms)

    def refresh(self) -> PanelState:
        """Poll the daemon and show what it says; returns what was shown."""
        self.state = self.panel.poll()
        self.status_label.setText(self.state.line())
        if self.state.last_tiff is not None and self.state.last_tiff != self._shown_tiff:
            self._show_frame(self.state.last_tiff)
        return self.state

    def _on_timer(self) -> None:
        self.refresh()

    def control(self, name: str) -> None:
        """Start, pause, resume or stop; the outcome (or why not) in the message line."""
        try:
            if name == "start":
                message = f"started {self.panel.start(self.budget.value())}"
            else:
                message = f"{name} requested ({getattr(self.panel, name)()})"
        except (ControlRefused, DaemonError) as exc:
            message = f"{name} refused: {exc}"
        self.message_label.setText(message)
        self.refresh()

    def _show_frame(self, path: Path) -> None:
        try:
            frame = read_frame(path)
        except (StedloopError, OSError):
            return  # not readable (yet): the next poll tries again
        self._shown_tiff = path
        if self.viewer is None:
            return
        pixel_um = frame.pixel_size_nm / 1000.0
        if LIVE_LAYER in self.viewer.layers:
            layer = self.viewer.layers[LIVE_LAYER]
            layer.data = frame.sted
            layer.scale = (pixel_um, pixel_um)
            layer.reset_contrast_limits()  # frames differ a lot in brightness
        else:
            self.viewer.add_image(
                frame.sted,
                name=LIVE_LAYER,
                scale=(pixel_um, pixel_um),
                units=("µm", "µm"),
                colormap="magma",
            )

    def closeEvent(self, event: Any) -> None:  # Qt's name
        self.timer.stop()
        self.panel.close()
        super().closeEvent(event)
