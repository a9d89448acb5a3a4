"""Writing and reading a session's frames (OME-TIFF), behind one pair of functions.

The format is ``stedloop.tiffio``'s (axes CYX, uint16, channel names, pixel size, applied
parameters and extra metadata, written atomically). Until that module exists in a checkout,
a minimal tifffile writer with the same atomic temp-then-rename discipline stands in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from stedloop.frame import Frame


def write_frame(path: Path, frame: Frame, extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write ``frame`` to ``path`` atomically (a crash leaves the old file or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from stedloop.tiffio import write_frame_tiff
    except ImportError:
        return _write_fallback(path, frame, extra_metadata or {})
    return write_frame_tiff(path, frame, extra_metadata=extra_metadata)


def _write_fallback(path: Path, frame: Frame, extra: dict[str, Any]) -> Path:
    import tifffile

    stack = np.clip(np.rint(frame.stack()), 0, 65535).astype(np.uint16)
    description = {
        "params": frame.params.as_dict(),
        "region": frame.region.as_dict(),
        "pixel_size_nm": frame.pixel_size_nm,
        "started_at_s": frame.started_at_s,
        "finished_at_s": frame.finished_at_s,
        "extra": extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    size_um = frame.pixel_size_nm / 1000
    tifffile.imwrite(
        tmp,
        stack,
        ome=True,
        metadata={
            "axes": "CYX",
            "Channel": {"Name": ["confocal_before", "sted", "confocal_after"]},
            "PhysicalSizeX": size_um,
            "PhysicalSizeY": size_um,
            "Description": json.dumps(description, default=str),
        },
    )
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def read_frame(path: Path) -> Frame:
    """Read a frame written by ``write_frame`` (needs ``stedloop.tiffio``)."""
    from stedloop.tiffio import read_frame_tiff

    return read_frame_tiff(path)
