"""The napari dock widget: follow a running daemon's session and control it.

A background thread polls the daemon's status once a second (its own ``DaemonPanel``
connection, so a slow or unreachable daemon never freezes napari) and reads the last frame;
the GUI thread shows the session's state, frames done, last score and best so far and puts the
last frame's STED image in a viewer layer (``live STED``) when the frame file is on this
machine. Start, pause, resume and stop follow the CLI's token rules. Loaded by napari only (Qt
through qtpy).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from qtpy.QtCore import QObject, Signal  # type: ignore[attr-defined]  # qtpy aliases it at run time
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
from stedloop.frame import Frame
from stedloop.napari.daemon_panel import ControlRefused, DaemonPanel, PanelState
from stedloop.store.frames import read_frame

LIVE_LAYER = "live STED"


class _Polled(QObject):
    """Carries a poll's result from the polling thread to the GUI thread (a queued signal)."""

    arrived = Signal(object, object)  # PanelState, Frame | None


def _poll(panel: DaemonPanel, known_tiff: Path | None) -> tuple[PanelState, Frame | None]:
    """One poll: the daemon's state, and the last frame when its file is new and readable
    (not readable yet: the next poll tries again)."""
    state = panel.poll()
    if state.last_tiff is None or state.last_tiff == known_tiff:
        return state, None
    try:
        return state, read_frame(state.last_tiff)
    except (StedloopError, OSError):
        return state, None


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

        self._polled = _Polled()
        self._polled.arrived.connect(self._show)
        self._poll_s = poll_ms / 1000.0
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._poll_panel = DaemonPanel(config_path, address)
        self._poller = threading.Thread(
            target=self._poll_loop, name="stedloop-napari-poll", daemon=True
        )
        self._poller.start()

    def refresh(self) -> PanelState:
        """Poll the daemon now, on this thread, and show what it says; returns it."""
        state, frame = _poll(self.panel, self._shown_tiff)
        self._show(state, frame)
        return state

    def _poll_loop(self) -> None:
        """The polling thread: status and the new frame file, then hand both to the GUI."""
        read_tiff: Path | None = None
        while not self._closing.is_set():
            state, frame = _poll(self._poll_panel, read_tiff)
            if frame is not None:
                read_tiff = state.last_tiff
            if self._closing.is_set():
                break
            self._polled.arrived.emit(state, frame)
            self._wake.wait(self._poll_s)
            self._wake.clear()
        self._poll_panel.close()

    def _show(self, state: PanelState, frame: Frame | None) -> None:
        self.state = state
        self.status_label.setText(state.line())
        if frame is not None and state.last_tiff is not None:
            self._show_frame(state.last_tiff, frame)

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
        self._wake.set()  # poll now: the change shows without waiting a second

    def _show_frame(self, path: Path, frame: Frame) -> None:
        if path == self._shown_tiff:
            return
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

    def stop_polling(self) -> None:
        """End the polling thread (it closes its own connection)."""
        self._closing.set()
        self._wake.set()
        self._poller.join(timeout=10)

    def closeEvent(self, event: Any) -> None:  # Qt's name
        self.stop_polling()
        self.panel.close()
        super().closeEvent(event)
