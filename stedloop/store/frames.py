"""Writing and reading a session's frames, through ``stedloop.tiffio`` (OME-TIFF: axes CYX,
uint16, channel names, pixel size, applied parameters and extra metadata, atomic writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stedloop.frame import Frame
from stedloop.tiffio import read_frame_tiff, write_frame_tiff


def write_frame(path: Path, frame: Frame, extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write ``frame`` to ``path`` atomically (a crash leaves the old file or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_frame_tiff(path, frame, extra_metadata=extra_metadata)


def read_frame(path: Path) -> Frame:
    return read_frame_tiff(path)
