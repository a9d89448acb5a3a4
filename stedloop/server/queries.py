"""Read-only methods answered from the session store (the ledger is the truth)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stedloop.errors import DataError, StorageError
from stedloop.frame import IMAGE_NAMES
from stedloop.server.methods import (
    FrameGetParams,
    OverviewGetParams,
    SessionGetParams,
    SessionsListParams,
)
from stedloop.server.sessions import SessionHost
from stedloop.wire.protocol import ProtocolError

if TYPE_CHECKING:
    from stedloop.store.history import SessionHistory
    from stedloop.store.session_store import SessionRecord, SessionStore


def _open(store: SessionStore, session_id: str, *, readonly: bool = True) -> SessionRecord:
    from stedloop.store import SessionNotFound

    try:
        return store.open(session_id, readonly=readonly)
    except SessionNotFound as exc:
        raise ProtocolError("not_found", str(exc)) from None
    except (DataError, StorageError) as exc:
        raise _unreadable(session_id, exc) from None


def _history(record: SessionRecord) -> SessionHistory:
    try:
        return record.history()
    except (DataError, StorageError) as exc:
        raise _unreadable(record.id, exc) from None


def _unreadable(session_id: str, exc: Exception) -> ProtocolError:
    return ProtocolError("storage", f"session {session_id} is unreadable: {exc}")


def resolve_session_id(store: SessionStore, asked: str) -> str:
    """The full id of the session ``asked`` names (exactly or by a unique prefix); not_found
    otherwise. Anything keyed by session id (files, tokens) must use this, never ``asked``."""
    record = _open(store, asked)
    try:
        return str(record.id)
    finally:
        record.close()


def expanded_from(asked: str, session_id: str) -> str | None:
    """The prefix a client gave when it stood for ``session_id``; None for an exact id."""
    return asked if asked != session_id else None


def sessions_list(
    store: SessionStore, host: SessionHost, params: SessionsListParams
) -> dict[str, Any]:
    current = host.snapshot()
    running_id = current["id"] if current and host.running else None
    sessions = []
    try:
        infos = store.list()
    except StorageError as exc:
        raise ProtocolError("storage", str(exc)) from None
    for info in infos[-params.limit :]:
        entry = info.as_dict()
        entry["running"] = info.id == running_id
        entry["interrupted"] = info.interrupted and info.id != running_id
        sessions.append(entry)
    return {"sessions": sessions}


def session_get(store: SessionStore, host: SessionHost, params: SessionGetParams) -> dict[str, Any]:
    from stedloop.store.export import overview_summary

    record = _open(store, params.session_id)
    try:
        history = _history(record)
        session_id = record.id
        folder = record.folder
    finally:
        record.close()
    best = history.best()
    live = host.snapshot()
    running = bool(live and live["id"] == session_id and host.running)
    frames = [
        {
            "frame": f.frame,
            "status": f.status,
            "params": f.params,
            "values": f.values,
            "combined": f.combined,
            "errors": f.objective_errors or None,
            "tiff": f.tiff,
            "source": f.source,
            "prior_from": history.prior_origin(number),
        }
        for number, f in sorted(history.frames.items())
        if number >= params.first_frame
    ]
    return {
        "id": session_id,
        "expanded_from": expanded_from(params.session_id, session_id),
        "name": history.created.get("name"),
        "folder": str(folder),
        "state": "running" if running else history.state,
        "ledger_state": history.state,
        "stop_reason": history.stop_reason,
        "interrupted": history.interrupted and not running,
        "frames_done": history.frames_done,
        "best": (
            {"frame": best.frame, "params": best.params, "combined": best.combined}
            if best
            else None
        ),
        "objectives": history.created.get("objectives"),
        "last_ledger_seq": history.last_seq,
        "created_at_s": history.created_at_s,
        "updated_at_s": history.updated_at_s,
        "live": live if running else None,
        "warm_start": None if history.warm_start is None else history.warm_start.ledger_payload(),
        "frames": frames,
        "overviews": overview_summary(history),
    }


def frame_get(store: SessionStore, params: FrameGetParams) -> dict[str, Any]:
    record = _open(store, params.session_id)
    try:
        history = _history(record)
        frame = history.frames.get(params.frame)
        if frame is None or frame.acquired is None:
            raise ProtocolError(
                "not_found", f"session {record.id} has no acquired frame {params.frame}"
            )
        path = (record.folder / frame.tiff) if frame.tiff else record.frame_path(params.frame)
        if not path.resolve().is_relative_to(record.folder.resolve()):
            # an edited ledger never makes the daemon serve a file outside the session
            raise ProtocolError(
                "storage", f"session {record.id}: frame {params.frame}'s file is outside it"
            )
    finally:
        record.close()
    image = _read_channel(path, params.image)
    result: dict[str, Any] = {
        "session_id": record.id,
        "expanded_from": expanded_from(params.session_id, record.id),
        "frame": params.frame,
        "image": params.image,
        "params": frame.params,
        "values": frame.values,
        "combined": frame.combined,
        "mode": params.mode,
    }
    if params.mode == "full":
        data = np.ascontiguousarray(image, dtype="<u2")
    else:
        data = thumbnail(image, params.max_px)
    result.update(
        shape=list(data.shape),
        dtype="uint16" if params.mode == "full" else "uint8",
        byte_order="little",
        data_b64=base64.b64encode(data.tobytes()).decode(),
    )
    return result


def overview_get(store: SessionStore, params: OverviewGetParams) -> dict[str, Any]:
    """A confocal overview's image, from its TIFF (``overviews/NNNN.tif``)."""
    from stedloop.store.overview_figures import overview_events
    from stedloop.store.overviews import read_overview

    record = _open(store, params.session_id)
    try:
        history = _history(record)
        event = next((e for e in overview_events(history) if e.overview == params.overview), None)
        if event is None or event.tiff is None:
            raise ProtocolError(
                "not_found", f"session {record.id} has no stored overview {params.overview}"
            )
        path = record.folder / event.tiff
        if not path.resolve().is_relative_to(record.folder.resolve()):
            raise ProtocolError(
                "storage", f"session {record.id}: overview {params.overview}'s file is outside it"
            )
    finally:
        record.close()
    try:
        image = read_overview(path).image
    except DataError as exc:
        raise ProtocolError("not_found", str(exc)) from None
    if params.mode == "full":
        data = np.ascontiguousarray(image, dtype="<u2")
    else:
        data = thumbnail(image, params.max_px)
    return {
        "session_id": record.id,
        "expanded_from": expanded_from(params.session_id, record.id),
        "overview": params.overview,
        "area": event.area,
        "pixel_size_nm": event.pixel_size_nm,
        "mode": params.mode,
        "shape": list(data.shape),
        "dtype": "uint16" if params.mode == "full" else "uint8",
        "byte_order": "little",
        "data_b64": base64.b64encode(data.tobytes()).decode(),
    }


def _read_channel(path: Path, name: str) -> np.ndarray:
    import tifffile

    try:
        stack = tifffile.imread(path)
    except (OSError, ValueError) as exc:
        raise ProtocolError("not_found", f"frame file {path} is unreadable: {exc}") from None
    stack = np.asarray(stack)
    if stack.ndim != 3 or stack.shape[0] != len(IMAGE_NAMES):
        raise ProtocolError("internal", f"frame file {path} has shape {stack.shape}, not (3, H, W)")
    channel: np.ndarray = stack[IMAGE_NAMES.index(name)]
    return channel


def thumbnail(image: np.ndarray, max_px: int) -> np.ndarray:
    """Block-mean downsampled, auto-contrasted (0.5-99.5 percentile) 8-bit image."""
    factor = max(1, -(-max(image.shape) // max_px))  # ceil division
    height = image.shape[0] // factor * factor
    width = image.shape[1] // factor * factor
    small = (
        image[:height, :width]
        .astype(np.float64)
        .reshape(height // factor, factor, width // factor, factor)
        .mean(axis=(1, 3))
    )
    low, high = np.percentile(small, [0.5, 99.5])
    scaled = (small - low) / (high - low) if high > low else np.zeros_like(small)
    pixels: np.ndarray = np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)
    return pixels
