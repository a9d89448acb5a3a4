"""A session's confocal overviews as TIFF files: ``overviews/NNNN.tif`` in its folder.

One uint16 image per file with its physical pixel size (µm, as ImageJ reads it) and, as JSON
in the image description, everything needed to rebuild the ``Overview`` (its position on the
sample, pixel size, applied settings, times). Written once, atomically, like the frames.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from stedloop.errors import DataError
from stedloop.frame import Overview
from stedloop.writeonce import publish_new

OVERVIEWS_DIR = "overviews"
FORMAT_NAME = "stedloop.overview"


def overview_path(session_folder: Path, index: int) -> Path:
    return session_folder / OVERVIEWS_DIR / f"{index:04d}.tif"


def write_overview(path: Path, overview: Overview) -> Path:
    """Write ``overview`` at ``path`` (never over an existing file: ``FileExistsError``)."""
    image = overview.image
    if image.min() < 0 or image.max() > np.iinfo(np.uint16).max:
        raise DataError("overview counts do not fit 0..65535")
    document = {
        "format": FORMAT_NAME,
        "version": 1,
        **overview.facts(),
        "metadata": _json_safe(overview.metadata),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels_per_um = 1000.0 / overview.pixel_size_nm
    handle, tmp_name = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        tifffile.imwrite(
            tmp,
            image.astype(np.uint16),
            description=json.dumps(document),
            resolution=(pixels_per_um, pixels_per_um),
            resolutionunit="NONE",
            metadata=None,
        )
        publish_new(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_overview(path: Path) -> Overview:
    """The overview in ``path``; ``DataError`` naming the file when it is not one."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            image = page.asarray()
            document = json.loads(page.description)
        if document.get("format") != FORMAT_NAME:
            raise ValueError("not a stedloop overview")
        return Overview.from_facts(image, document, dict(document.get("metadata") or {}))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise DataError(f"overview file {path}: {exc}") from None


def _json_safe(metadata: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, np.generic):
            value = value.item()
        if value is None or isinstance(value, (str, int, float, bool, list, dict)):
            kept[str(key)] = value
    return kept
