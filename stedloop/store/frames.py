"""Writing and reading a session's frames, through ``stedloop.tiffio`` (OME-TIFF: axes CYX,
uint16, channel names, pixel size, applied parameters and extra metadata, atomic writes).

Frame files are written once: ``write_frame`` never replaces a file. A file at a frame's path
that the ledger does not record (written just before a crash, or damaged) is moved aside with
``set_aside``, never deleted, so no recorded data is ever lost.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stedloop.frame import Frame
from stedloop.tiffio import read_frame_tiff, write_frame_tiff
from stedloop.writeonce import publish_new

FRAME_SUFFIX = ".ome.tif"
#: What ``write_frame_tiff``'s temporary files look like (``.0007.ome.tif.k2j4_x.tmp``).
TEMP_PATTERN = f".*{FRAME_SUFFIX}.*.tmp"


def write_frame(path: Path, frame: Frame, extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write ``frame`` to ``path`` atomically; ``DataError`` if ``path`` already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_frame_tiff(path, frame, extra_metadata=extra_metadata)


def read_frame(path: Path) -> Frame:
    return read_frame_tiff(path)


def set_aside(path: Path) -> Path:
    """Rename the file at ``path`` to the first free ``NNNN.orphan-<k>.ome.tif``; the new path."""
    stem = path.name.removesuffix(FRAME_SUFFIX)
    for k in range(1, 10_000):
        target = path.with_name(f"{stem}.orphan-{k}{FRAME_SUFFIX}")
        try:
            publish_new(path, target)
            return target
        except FileExistsError:
            continue
    raise FileExistsError(f"no free orphan name for {path}")  # pragma: no cover


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files of frame writes that a killed process left in ``folder``.

    Call only while no process writes the session (its lock is free or ours). A temporary
    file never holds recorded data: a frame is recorded after its file has its final name.
    """
    if not folder.is_dir():
        return []
    removed = []
    for tmp in sorted(folder.glob(TEMP_PATTERN)):
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            continue
        removed.append(tmp)
    return removed
