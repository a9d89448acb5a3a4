"""The live view's overview image: a session's confocal overview from the daemon
(``overview.get``) with its picked and imaged regions (``session.get``), drawn by the export's
drawing (``stedloop.store.overview_figures.overview_png``), so both show the same figure."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from stedloop import events as ev
from stedloop.errors import StedloopError
from stedloop.frame import Region
from stedloop.store.overview_figures import overview_png

#: pyplot keeps global state: one drawing at a time (web handlers run in a thread pool).
_DRAWING = threading.Lock()
#: What session.get adds to each picked region of the ``overview`` event.
_ADDED_REGION_KEYS = ("width_um", "height_um", "frames")


class OverviewMissing(StedloopError):
    """The session has no such overview."""


def overview_event(entry: dict[str, Any]) -> ev.OverviewTaken:
    """The ``overview`` event behind one entry of ``session.get``'s ``overviews``."""
    regions = [
        {k: v for k, v in r.items() if k not in _ADDED_REGION_KEYS} for r in entry["regions"]
    ]
    fields = {k: v for k, v in entry.items() if k in ev.OverviewTaken.model_fields}
    return ev.OverviewTaken(**{**fields, "regions": regions})


def imaged_regions(
    entry: dict[str, Any], statuses: dict[int, str]
) -> list[tuple[int, Region, str]]:
    """(frame, region, status) of every frame imaged on one of the entry's picked regions."""
    return [
        (frame, Region.from_dict(region), statuses.get(frame, ""))
        for region in entry["regions"]
        for frame in region.get("frames") or []
    ]


def draw_daemon_overview(
    call: Callable[..., Any], session_id: str, number: int, frame_pixel_nm: float
) -> bytes:
    """Overview ``number`` of ``session_id`` as a PNG, asked of the daemon through ``call``;
    ``frame_pixel_nm``: the frames' pixel size when the session does not record it."""
    detail = call("session.get", session_id=session_id)
    entry = next((o for o in detail.get("overviews") or [] if o["overview"] == number), None)
    if entry is None:
        raise OverviewMissing(f"session {detail['id']} has no overview {number}")
    reply = call("overview.get", session_id=detail["id"], overview=number, mode="full")
    image = np.frombuffer(base64.b64decode(reply["data_b64"]), "<u2").reshape(reply["shape"])
    statuses = {int(f["frame"]): str(f["status"]) for f in detail.get("frames") or []}
    title = f"session {detail['id']}" + (f" ({detail['name']})" if detail.get("name") else "")
    with _DRAWING:
        return overview_png(
            overview_event(entry),
            image,
            imaged_regions(entry, statuses),
            float(entry.get("frame_pixel_size_nm") or frame_pixel_nm),
            title,
        )
