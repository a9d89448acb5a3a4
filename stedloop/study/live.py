"""Live view of a running daemon session: latest frame and scores, parameter trace, objectives
against frame number, Pareto front.

A background thread follows the daemon's events with ``stedloop.client.Client.follow`` (no gap,
no repeat; catches up through ``events.since``) and keeps a snapshot of the current session;
after (re)connecting it backfills the session's frames with ``session.get``, and after each
frame's outcome it reads ``session.get`` from that frame on: the frame's ``source`` and
``prior_from``, the warm start and the overviews are in the ledger, not in the events. The
browser gets the snapshot through server-sent events (``/api/live/events``) or by polling
``/api/live/state``; frame images come from ``frame.get`` and are rendered like the study's,
overviews from ``overview.get``, drawn like the export's (``stedloop.study.live_overview``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from stedloop import events as ev
from stedloop.errors import StedloopError
from stedloop.study.live_overview import draw_daemon_overview
from stedloop.study.render import render_png

if TYPE_CHECKING:
    from stedloop.client import Client

_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
MAX_LOGS = 50
RECONNECT_S = 1.0


def objective_directions(names: list[str]) -> dict[str, str | None]:
    """Each objective's direction from its plugin class; None when the plugin is unknown."""
    from stedloop.registry import load

    out: dict[str, str | None] = {}
    for name in names:
        try:
            direction = getattr(load("stedloop.objectives", name), "direction", None)
        except StedloopError:
            direction = None
        out[name] = direction if direction in ("maximize", "minimize") else None
    return out


def pareto_frames(frames: list[dict[str, Any]], directions: dict[str, str | None]) -> list[int]:
    """Numbers of the frames on the Pareto front over the objectives with a known direction."""
    from stedloop.objectives.pareto import pareto_front

    known = {n: d for n, d in directions.items() if d is not None}
    if not known:
        return []
    return pareto_front(
        [f["frame"] for f in frames], [f.get("values") or {} for f in frames], known
    )


class LiveHub:
    """The daemon-side state the live page shows, kept current by a follower thread."""

    def __init__(self, address: str, event_address: str | None = None, timeout_s: float = 3.0):
        self.address = address
        self.event_address = event_address
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._request_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._request_client: Client | None = None
        self.version = 0
        self.connected = False
        self.error: str | None = None
        self.daemon: dict[str, Any] = {}
        self.pixel_size_nm = 20.0
        self.session: dict[str, Any] | None = None
        self.frames: dict[int, dict[str, Any]] = {}
        #: From the ledger (``session.get``): the warm start's event and the overviews.
        self.warm_start: dict[str, Any] | None = None
        self.overviews: list[dict[str, Any]] = []
        self.directions: dict[str, str | None] = {}
        self.logs: list[dict[str, Any]] = []

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="live-follow", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._request_lock:
            if self._request_client is not None:
                self._request_client.close()

    def call(self, method: str, **params: Any) -> Any:
        """A request from a web handler (one shared client, serialised: it is not thread-safe)."""
        from stedloop.client import Client

        with self._request_lock:
            if self._request_client is None:
                self._request_client = Client(self.address, timeout_s=self.timeout_s)
            return self._request_client.call(method, **params)

    # -- following ------------------------------------------------------------------------
    def _changed(self) -> None:
        self.version += 1

    def _run(self) -> None:
        from stedloop.client import Client

        while not self._stop.is_set():
            client = Client(self.address, timeout_s=self.timeout_s)
            try:
                status = client.call("status")
                event_address = self.event_address or status["daemon"]["event_address"]
                self._load_status(client, status)
                for event in client.follow(
                    event_address, since_seq=status["last_seq"], stop=self._stop
                ):
                    if self._stop.is_set():
                        return
                    self._apply(client, event)
            except StedloopError as exc:
                with self._lock:
                    if self.connected or self.error != str(exc):
                        self.connected = False
                        self.error = str(exc)
                        self._changed()
            except Exception as exc:  # keep the view alive; show what went wrong
                with self._lock:
                    self.connected = False
                    self.error = f"{type(exc).__name__}: {exc}"
                    self._changed()
            finally:
                client.close()
            self._stop.wait(RECONNECT_S)

    def _load_status(self, client: Client, status: dict[str, Any]) -> None:
        session = status.get("session")
        detail = None
        if session and session.get("id"):
            detail = client.call("session.get", session_id=session["id"])
        with self._lock:
            self.connected = True
            self.error = None
            self.daemon = status.get("daemon") or {}
            driver = status.get("driver") or {}
            self.pixel_size_nm = float(driver.get("pixel_size_nm") or 20.0)
            if session:
                self._set_session(session, detail)
            self._changed()

    def _set_session(self, session: dict[str, Any], detail: dict[str, Any] | None) -> None:
        new_id = session.get("id")
        if self.session is None or self.session.get("id") != new_id:
            self.frames, self.warm_start, self.overviews = {}, None, []
        objectives = list(session.get("objectives") or (detail or {}).get("objectives") or [])
        self.session = {
            "id": new_id,
            "state": session.get("state"),
            "frames_done": session.get(
                "frames_done", session.get("frames", (detail or {}).get("frames_done"))
            ),
            "budget_frames": session.get("budget_frames"),
            "objectives": objectives,
        }
        self.directions = objective_directions(objectives)
        self._merge_detail(detail or {})

    def _merge_detail(self, detail: dict[str, Any]) -> None:
        """Frames, warm start and overviews from a ``session.get`` reply of this session."""
        if "warm_start" in detail:
            self.warm_start = detail["warm_start"]
        if "overviews" in detail:
            self.overviews = list(detail["overviews"] or [])
        for record in detail.get("frames") or []:
            if record.get("status") in ("told", "scored", "failed") and "frame" in record:
                self.frames[int(record["frame"])] = {
                    "frame": int(record["frame"]),
                    "params": record.get("params") or {},
                    "values": record.get("values") or {},
                    "combined": record.get("combined"),
                    "status": record.get("status"),
                    "source": record.get("source"),
                    "prior_from": record.get("prior_from"),
                }

    def _apply(self, client: Client, event: dict[str, Any]) -> None:
        topic = event.get("topic")
        session_id = event.get("session_id")
        if topic == "gap":
            # Events were lost from the daemon's buffer: reload the session from its ledger.
            self._load_status(client, client.call("status"))
            return
        typed = ev.from_wire(topic, event.get("data") or {})
        if isinstance(typed, ev.Opened) or (
            isinstance(typed, (ev.Paused, ev.Resumed, ev.Ended))
            and (self.session is None or self.session.get("id") != session_id)
        ):
            # A run begins (a resumed session's earlier frames come from its ledger).
            self._load_status(client, client.call("status"))
            return
        if isinstance(typed, (ev.Paused, ev.Resumed, ev.Ended)):
            with self._lock:
                assert self.session is not None
                self.session["state"] = {"resumed": "running"}.get(typed.state, typed.state)
                if typed.frames_done is not None:
                    self.session["frames_done"] = typed.frames_done
                self._changed()
        elif isinstance(typed, ev.FrameOutcome):
            # where the frame's setting came from, and any overview taken for it: ledger only
            detail = client.call("session.get", session_id=session_id, first_frame=typed.frame)
            with self._lock:
                if self.session is None or self.session.get("id") != session_id:
                    self.session = {"id": session_id, "state": "running", "objectives": []}
                self.frames[typed.frame] = {
                    "frame": typed.frame,
                    "params": dict(typed.params),
                    "values": dict(typed.values),
                    "combined": typed.combined,
                    "status": typed.status,
                    "source": None,
                    "prior_from": None,
                }
                self._merge_detail(detail)
                if typed.frames_done is not None:
                    self.session["frames_done"] = typed.frames_done
                self.session["budget_frames"] = typed.budget_frames
                names = sorted(set(self.session.get("objectives") or []) | set(typed.values))
                if names != sorted(self.directions):
                    self.session["objectives"] = names
                    self.directions = objective_directions(names)
                self._changed()
        elif isinstance(typed, ev.Log):
            with self._lock:
                self.logs.append(
                    {"time_s": event.get("time_s"), "level": typed.level, "message": typed.message}
                )
                del self.logs[:-MAX_LOGS]
                self._changed()

    # -- views ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            frames = [self.frames[n] for n in sorted(self.frames)]
            scored = [f for f in frames if f.get("combined") is not None]
            best = max(scored, key=lambda f: f["combined"]) if scored else None
            return {
                "version": self.version,
                "connected": self.connected,
                "error": self.error,
                "address": self.address,
                "daemon": {k: self.daemon.get(k) for k in ("version", "boot_id", "uptime_s")},
                "session": dict(self.session) if self.session else None,
                "frames": frames,
                "warm_start": self.warm_start,
                "overviews": list(self.overviews),
                "latest": frames[-1] if frames else None,
                "best": best,
                "directions": dict(self.directions),
                "pareto": pareto_frames(frames, self.directions),
                "logs": list(self.logs),
                "pixel_size_nm": self.pixel_size_nm,
            }


def add_live_routes(app: FastAPI, address: str, event_address: str | None = None) -> LiveHub:
    """Mount the live page and its API on ``app``; the follower starts with the app."""
    hub = LiveHub(address, event_address)
    static_dir = Path(__file__).parent / "static"
    app.router.on_startup.append(hub.start)
    app.router.on_shutdown.append(hub.stop)
    app.state.live_hub = hub

    @app.get("/live", include_in_schema=False)
    def live_page() -> Response:
        hub.start()
        return FileResponse(static_dir / "live.html", headers=_NO_STORE, media_type="text/html")

    @app.get("/api/live/state")
    def state() -> JSONResponse:
        hub.start()
        return JSONResponse(hub.snapshot(), headers=_NO_STORE)

    @app.get("/api/live/events")
    async def events() -> StreamingResponse:
        hub.start()

        async def stream() -> AsyncIterator[str]:
            sent = -1
            last_beat = time.monotonic()
            while True:
                if hub.version != sent:
                    snap = hub.snapshot()
                    sent = snap["version"]
                    yield f"event: state\ndata: {json.dumps(snap)}\n\n"
                    last_beat = time.monotonic()
                elif time.monotonic() - last_beat > 15:
                    yield ": keep-alive\n\n"  # proxies close silent connections
                    last_beat = time.monotonic()
                await asyncio.sleep(0.2)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={**_NO_STORE, "X-Accel-Buffering": "no"},
        )

    @app.get("/api/live/frame/{session_id}/{number}.png", include_in_schema=False)
    def frame_png(session_id: str, number: int) -> Response:
        try:
            reply = hub.call("frame.get", session_id=session_id, frame=number, mode="full")
        except StedloopError as exc:
            raise HTTPException(404, str(exc)) from None
        dtype = "<u2" if reply.get("dtype") == "uint16" else "u1"
        image = np.frombuffer(base64.b64decode(reply["data_b64"]), dtype).reshape(reply["shape"])
        return Response(
            render_png(image, hub.pixel_size_nm), media_type="image/png", headers=_NO_STORE
        )

    @app.get("/api/live/overview/{session_id}/{number}.png", include_in_schema=False)
    def overview_png(session_id: str, number: int) -> Response:
        try:
            png = draw_daemon_overview(hub.call, session_id, number, hub.pixel_size_nm)
        except StedloopError as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(png, media_type="image/png", headers=_NO_STORE)

    return hub
