"""The napari reader: a session folder (or its ``ledger.sqlite``) as two image layers.

The layers are the frames' confocal (before) and STED images stacked over the frame axis,
scaled by the physical pixel size in µm. What the optimizer tried and what it got back for
each frame (number, status, parameters, scores) is in each layer's
``metadata["stedloop"]["frames"]``, one entry per index of the frame axis.

Sessions are read through ``stedloop.store`` only (the ledger is the truth; the frames are
the files it records), never through the daemon. Returns napari's plain layer-data tuples,
so napari itself is not imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stedloop.frame import Frame
from stedloop.store.frames import read_frame
from stedloop.store.history import FrameRecord
from stedloop.store.ledger import Ledger
from stedloop.store.session_store import LEDGER_NAME, SessionRecord

#: napari's layer data: (data, layer keyword arguments, layer type)
LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[str | list[str]], list[LayerData]]


def get_reader(path: str | list[str]) -> ReaderFunction | None:
    """napari's reader hook: ``read_session`` for a session folder or its ledger, else None
    (napari then offers the path to other readers)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read_session if session_folder(Path(path)) is not None else None


def session_folder(path: Path) -> Path | None:
    """The session folder ``path`` names (the folder itself or its ledger file), or None."""
    if path.is_dir() and (path / LEDGER_NAME).is_file():
        return path
    if path.name == LEDGER_NAME and path.is_file():
        return path.parent
    return None


def read_session(path: str | list[str]) -> list[LayerData]:
    """The session's confocal and STED stacks as image layers (frames × rows × columns)."""
    folder = session_folder(Path(path[0] if isinstance(path, list) else path))
    if folder is None:
        raise ValueError(f"{path} is not a stedloop session folder (no {LEDGER_NAME} in it)")
    record = SessionRecord(folder.name, folder, Ledger(folder / LEDGER_NAME, readonly=True))
    try:
        history = record.history()
    finally:
        record.close()
    records = [f for f in (history.frames[k] for k in sorted(history.frames)) if f.tiff]
    records = [f for f in records if (folder / str(f.tiff)).is_file()]
    if not records:
        raise ValueError(f"session {folder.name} has no frame images yet")
    frames = [read_frame(folder / str(f.tiff)) for f in records]
    pixel_um = frames[0].pixel_size_nm / 1000.0
    metadata = {
        "stedloop": {
            "session": folder.name,
            "name": history.created.get("name"),
            "state": history.state,
            "pixel_size_um": pixel_um,
            "objectives": history.created.get("objectives", []),
            "best_frame": best.frame if (best := history.best()) else None,
            "frames": [frame_summary(r, f) for r, f in zip(records, frames, strict=True)],
        }
    }
    label = history.created.get("name") or folder.name
    scale = (1.0, pixel_um, pixel_um)
    layers: list[LayerData] = []
    for image, title, colormap in (
        ("confocal_before", "confocal", "gray"),
        ("sted", "STED", "magma"),
    ):
        stack = stack_images([getattr(f, image) for f in frames])
        kwargs = {
            "name": f"{label} {title}",
            "scale": scale,
            # the frame axis counts frames; the image axes are in µm (napari's scale bar reads it)
            "units": ("dimensionless", "µm", "µm"),
            "axis_labels": ("frame", "y", "x"),
            "colormap": colormap,
            "contrast_limits": contrast_limits(stack),
            "metadata": metadata,
        }
        layers.append((stack, kwargs, "image"))
    return layers


def frame_summary(record: FrameRecord, frame: Frame) -> dict[str, Any]:
    """One frame's entry in the layer metadata: what was asked, applied, and scored."""
    return {
        "frame": record.frame,
        "status": record.status,
        "source": record.source,
        "params": dict(record.params),
        "params_applied": frame.params.as_dict(),
        "values": dict(record.values),
        "combined": record.combined,
        "tiff": record.tiff,
    }


def stack_images(images: list[np.ndarray]) -> np.ndarray:
    """The images stacked over a new first axis; smaller ones are padded with zeros at the
    bottom and right (a session's fields normally all have one size)."""
    rows = max(i.shape[0] for i in images)
    columns = max(i.shape[1] for i in images)
    stack = np.zeros((len(images), rows, columns), dtype=np.uint16)
    for k, image in enumerate(images):
        stack[k, : image.shape[0], : image.shape[1]] = image
    return stack


def contrast_limits(stack: np.ndarray) -> tuple[float, float]:
    """Display limits from the 0.1 and 99.9 percentiles: a few hot pixels do not wash the
    frames out."""
    low, high = (float(v) for v in np.percentile(stack, [0.1, 99.9]))
    return (low, high if high > low else low + 1.0)


__all__ = ["get_reader", "read_session", "session_folder"]
