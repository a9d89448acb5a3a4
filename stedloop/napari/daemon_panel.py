"""What the napari dock widget shows and does, without Qt: a running daemon's session (state,
frames done, last score, best so far, the last frame's file) and its controls.

Control follows the CLI's token rules (``stedloop.client.tokens``): starting a session saves
its token where `stedloop stop` finds it, and pause, resume and stop use the saved token (or
one given), so only the client that started a session — the CLI or this panel — controls it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stedloop.client import Client, DaemonError
from stedloop.client.tokens import load_token, save_token
from stedloop.config import load_config
from stedloop.paths import data_dir
from stedloop.wire.security import keys_dir_of


class ControlRefused(Exception):
    """A control this client may not use (no token for the session, no session)."""


@dataclass(frozen=True)
class PanelState:
    """One poll of the daemon, as the widget shows it."""

    session_id: str | None = None
    state: str | None = None
    frames_done: int | None = None
    budget_frames: int | None = None
    last_frame: int | None = None
    last_score: float | None = None
    best_score: float | None = None
    #: the last frame's OME-TIFF when it is on this machine (the daemon's data folder is ours)
    last_tiff: Path | None = None
    error: str | None = None  # the daemon could not be reached, or said no

    def line(self) -> str:
        """One line for the widget's label."""
        if self.error:
            return f"error: {self.error}"
        if self.session_id is None:
            return "no session in this daemon"
        return (
            f"{self.session_id}  {self.state}  {self.frames_done}/{self.budget_frames} frames  "
            f"last {_fmt(self.last_score)}  best {_fmt(self.best_score)}"
        )


class DaemonPanel:
    """A client of one daemon: its address from the config (or given), CURVE keys likewise."""

    def __init__(
        self, config_path: Path | None = None, address: str | None = None, timeout_s: float = 5.0
    ) -> None:
        loaded = load_config(config_path)
        self.address = address or loaded.config.daemon.request_address
        self.sessions_dir = data_dir(loaded.config.store.data_dir) / "sessions"
        self.client = Client(self.address, timeout_s=timeout_s, curve=keys_dir_of(loaded))

    def poll(self) -> PanelState:
        try:
            status = self.client.call("status")
        except DaemonError as exc:
            return PanelState(error=str(exc))
        session = status.get("session")
        if not session:
            return PanelState()
        last: dict[str, Any] = session.get("last_frame") or {}
        tiff = last.get("tiff")
        path = self.sessions_dir / str(session["id"]) / str(tiff) if tiff else None
        return PanelState(
            session_id=str(session["id"]),
            state=session.get("state"),
            frames_done=session.get("frames_done"),
            budget_frames=session.get("budget_frames"),
            last_frame=last.get("frame"),
            last_score=last.get("combined"),
            best_score=session.get("best_score"),
            last_tiff=path if path is not None and path.is_file() else None,
        )

    def start(self, budget_frames: int | None = None, name: str | None = None) -> str:
        """Start a session; its token is saved for this daemon, as `stedloop start` does."""
        params: dict[str, Any] = {"idempotency_key": uuid.uuid4().hex}
        if budget_frames is not None:
            params["budget_frames"] = budget_frames
        if name:
            params["name"] = name
        result = self.client.call_when_ready("session.start", 60.0, **params)
        save_token(self.client.address, result["session_id"], result["token"])
        return str(result["session_id"])

    def pause(self, token: str | None = None) -> str:
        return self._control("session.pause", token)

    def resume(self, token: str | None = None) -> str:
        return self._control("session.resume", token)

    def stop(self, token: str | None = None, abort: bool = False) -> str:
        return self._control("session.stop", token, abort=abort)

    def _control(self, method: str, token: str | None, **params: Any) -> str:
        """The session's state after ``method``; ``ControlRefused`` without a token."""
        status = self.client.call("status")
        session = status.get("session")
        if not session:
            raise ControlRefused("no session in this daemon")
        sid = str(session["id"])
        found = token or load_token(self.client.address, sid)
        if not found:
            raise ControlRefused(
                f"no token for session {sid}: only the client that started it may control it"
            )
        result = self.client.call(method, session_id=sid, token=found, **params)
        return str(result["state"])

    def close(self) -> None:
        self.client.close()


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"
