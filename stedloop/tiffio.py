"""Frames as OME-TIFF files that Fiji and napari open, and back.

A frame file holds the three images as one uint16 CYX stack with channel names
``confocal_before``, ``sted``, ``confocal_after``, the physical pixel size in µm, and the
applied parameters as an OME MapAnnotation (visible in Fiji's metadata window). Everything
needed to rebuild the ``Frame`` (params, region, pixel size, timestamps, metadata, extra
metadata) is also stored as one JSON document in the OME Image ``Description``.
Files are written atomically: a temporary file in the same folder, then a rename that never
replaces an existing file unless asked to (``overwrite``): a recorded frame is written once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from stedloop.errors import DataError, StedloopError
from stedloop.frame import IMAGE_NAMES, Frame
from stedloop.params import PARAM_UNITS
from stedloop.writeonce import publish_new

#: Marks our JSON document inside the OME description; bump on incompatible changes.
FORMAT_NAME = "stedloop.frame"
FORMAT_VERSION = 1
_UINT16_MAX = np.iinfo(np.uint16).max
#: OME channel names taken as the STED image of a multi-channel file: ``sted`` (what
#: ``write_frame_tiff`` writes) or a name that starts with it ("STED 775", "sted_actin"), any
#: case; "confocal_sted" or "stedx" are not.
STED_CHANNEL_NAME = re.compile(r"^\s*sted(?![a-z])", re.IGNORECASE)


def write_frame_tiff(
    path: str | Path,
    frame: Frame,
    extra_metadata: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
    annotations: Mapping[str, str] | None = None,
) -> Path:
    """Write ``frame`` as an OME-TIFF at ``path`` (atomically) and return the path.

    Counts must fit uint16 (0..65535); anything else is refused with ``DataError`` rather
    than clipped. An existing file at ``path`` is refused with ``DataError`` (and left as it
    is) unless ``overwrite``. Non-JSON metadata values (arrays such as a ground truth) are
    left out and listed under ``omitted_metadata``. A disk that fails (full, read-only) raises
    the ``OSError`` and leaves no temporary file. ``annotations`` are added to the OME
    MapAnnotation beside the parameters (the export puts a frame's scores there).
    """
    path = Path(path)
    stack = _as_uint16(frame.stack(), path)
    metadata, omitted = _jsonable(frame.metadata)
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        **frame.facts(),
        "param_units": dict(PARAM_UNITS),
        "metadata": metadata,
        "omitted_metadata": omitted,
        "extra": _jsonable(extra_metadata or {})[0],
    }
    pixel_um = frame.pixel_size_nm / 1000.0
    pairs = {
        f"{name} ({PARAM_UNITS[name]})": f"{value:g}"
        for name, value in frame.params.as_dict().items()
    }
    pairs.update(
        {"region x (µm)": f"{frame.region.x_um:g}", "region y (µm)": f"{frame.region.y_um:g}"}
    )
    pairs.update(annotations or {})
    ome_metadata = {
        "axes": "CYX",
        "Name": path.name.removesuffix(".ome.tif").removesuffix(".tif"),
        "Description": json.dumps(document, allow_nan=False, default=_json_default),
        "PhysicalSizeX": pixel_um,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": pixel_um,
        "PhysicalSizeYUnit": "µm",
        "Channel": {"Name": list(IMAGE_NAMES)},
        "MapAnnotation": {"Value": pairs},
    }
    if not path.parent.is_dir():
        raise DataError(f"cannot write {path}: folder {path.parent} does not exist")
    if not overwrite and os.path.lexists(path):
        raise DataError(f"refusing to overwrite {path}: frame files are written once")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        tifffile.imwrite(tmp_name, stack, ome=True, photometric="minisblack", metadata=ome_metadata)
        with open(tmp_name, "rb+") as handle:  # on disk before it takes the final name
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp_name, path)
        else:
            try:
                publish_new(Path(tmp_name), path)
            except FileExistsError:  # appeared while writing
                raise DataError(
                    f"refusing to overwrite {path}: frame files are written once"
                ) from None
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_frame_tiff(path: str | Path) -> Frame:
    """Read a frame written by ``write_frame_tiff``; ``DataError`` naming the file if unusable.

    The extra metadata given when writing is returned in ``frame.metadata["extra"]``.
    """
    path = Path(path)
    stack, description = _read(path, want_description=True)
    try:
        document = json.loads(description)
        if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
            raise ValueError("no stedloop frame description")
        if int(document["version"]) > FORMAT_VERSION:
            raise ValueError(f"written by a newer stedloop (format version {document['version']})")
        if stack.ndim != 3 or stack.shape[0] != len(IMAGE_NAMES):
            raise ValueError(f"expected 3 channels (CYX), got shape {stack.shape}")
        metadata = dict(document.get("metadata") or {})
        metadata["extra"] = document.get("extra") or {}
        return Frame.from_facts(list(stack), document, metadata)
    except (ValueError, KeyError, TypeError, StedloopError) as exc:
        raise DataError(f"{path} is not a readable stedloop frame: {exc}") from None


def read_image_tiff(path: str | Path) -> np.ndarray:
    """Read a plain single-image TIFF as a 2-D array; ``DataError`` naming the file otherwise."""
    path = Path(path)
    image, _ = _read(path, want_description=False)
    image = np.squeeze(image)
    if image.ndim != 2:
        raise DataError(f"{path} holds an image of shape {image.shape}; expected one 2-D image")
    if not np.issubdtype(image.dtype, np.number):
        raise DataError(f"{path} has non-numeric pixels ({image.dtype})")
    return image


@dataclass(frozen=True)
class PickedImage:
    """The 2-D image a file holds, and the OME channel it was picked from (None: the only one)."""

    image: np.ndarray
    channel: str | None = None


def read_sted_image(path: str | Path) -> PickedImage:
    """The one 2-D image of a TIFF, or the STED channel of a multi-channel OME-TIFF.

    A file that holds one image (after dropping axes of length 1) gives that image. A stack
    whose only axis besides the image plane is the OME channel axis gives its one channel
    named like STED (``STED_CHANNEL_NAME``): the frames ``write_frame_tiff`` writes. Any other
    stack is ambiguous and refused with ``DataError`` naming the file, what it holds and what
    to do.
    """
    path = Path(path)
    array, axes, ome_xml = _read_only_series(path)
    kept = [i for i, n in enumerate(array.shape) if n != 1]
    image = array.reshape([array.shape[i] for i in kept])
    # tifffile names every axis; "" (unknown) would be a file it could not describe
    axes = "".join(axes[i] for i in kept) if len(axes) == array.ndim else ""
    if not np.issubdtype(image.dtype, np.number):
        raise DataError(f"{path} has non-numeric pixels ({image.dtype})")
    if image.ndim == 2:
        return PickedImage(image)
    if image.ndim < 2:
        raise DataError(f"{path} holds an image of shape {image.shape}; expected one 2-D image")
    if sorted(axes) != ["C", "X", "Y"]:
        planes = [n for n, a in zip(image.shape, axes, strict=True) if a not in "YX"]
        why = "more than one image per channel" if "C" in axes else "no channel is named sted"
        raise DataError(
            f"{path} holds {math.prod(planes or image.shape[:-2])} images (shape {image.shape}"
            f"{f', axes {axes}' if axes else ''}); {why}; extract one 2-D image"
        )
    names = _ome_channel_names(ome_xml)
    n_channels = image.shape[axes.index("C")]
    if len(names) != n_channels or not any(names):
        names = []
    sted = [i for i, name in enumerate(names) if STED_CHANNEL_NAME.match(name)]
    listed = f"channels {', '.join(repr(n) for n in names)}" if names else "unnamed channels"
    if not sted:
        raise DataError(
            f"{path} holds {n_channels} images ({listed}); no channel is named sted; "
            "extract one 2-D image"
        )
    if len(sted) > 1:
        raise DataError(
            f"{path} holds {len(sted)} channels named like sted ({listed}); "
            "extract the one to score as a 2-D image"
        )
    return PickedImage(np.take(image, sted[0], axis=axes.index("C")), names[sted[0]])


# -- helpers -------------------------------------------------------------------------------
def _read_only_series(path: Path) -> tuple[np.ndarray, str, str | None]:
    """The only image series of a TIFF, its tifffile axes and the OME-XML (None if none)."""
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    try:
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            if len(tif.pages) == 0:
                raise DataError(f"{path} is not a readable TIFF: it holds no image")
            if len(tif.series) > 1:  # e.g. pages written one by one, each its own image
                raise DataError(
                    f"{path} holds {len(tif.series)} separate images (pages or series); "
                    "no channel is named sted; extract one 2-D image"
                )
            series = tif.series[0]
            return series.asarray(), series.axes, tif.ome_metadata
    except DataError:
        raise
    except Exception as exc:  # tifffile raises many kinds for damaged files
        raise DataError(f"{path} is not a readable TIFF: {type(exc).__name__}: {exc}") from None


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """Keep tifffile's log warnings about a damaged file off stderr: the DataError we raise
    names the file and the problem in one line."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.ERROR + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _ome_channel_names(ome_xml: str | None) -> list[str]:
    """The channel names of the first OME Image, in order ("" for an unnamed one)."""
    if not ome_xml:
        return []
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return []
    image = next((e for e in root if _local(e.tag) == "Image"), None)
    if image is None:
        return []
    pixels = next((e for e in image if _local(e.tag) == "Pixels"), None)
    if pixels is None:
        return []
    return [e.get("Name", "") for e in pixels if _local(e.tag) == "Channel"]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _read(path: Path, want_description: bool) -> tuple[np.ndarray, str]:
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    try:
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            array = tif.asarray()
            description = _frame_description(tif.ome_metadata) if want_description else ""
    except DataError as exc:
        raise DataError(f"{path} is not a readable stedloop frame: {exc}") from None
    except Exception as exc:  # tifffile raises many kinds for damaged files
        raise DataError(f"{path} is not a readable TIFF: {type(exc).__name__}: {exc}") from None
    return array, description


def _frame_description(ome_xml: str | None) -> str:
    if not ome_xml:
        raise DataError("no OME-XML metadata (not a stedloop frame)")
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError as exc:
        raise DataError(f"damaged OME-XML metadata ({exc})") from None
    for element in root.iter():
        if element.tag.endswith("}Description") or element.tag == "Description":
            return element.text or ""
    raise DataError("OME-XML has no image description (not a stedloop frame)")


def _as_uint16(stack: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(stack.dtype, np.floating) and not np.all(np.isfinite(stack)):
        raise DataError(f"cannot write {path}: frame holds NaN or infinite values")
    if stack.size and (stack.min() < 0 or stack.max() > _UINT16_MAX):
        raise DataError(
            f"cannot write {path}: counts {stack.min()}..{stack.max()} do not fit uint16 (0..65535)"
        )
    if np.issubdtype(stack.dtype, np.floating) and not np.array_equal(stack, np.round(stack)):
        raise DataError(f"cannot write {path}: frame holds non-integer counts")
    return np.ascontiguousarray(stack, dtype=np.uint16)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _jsonable(mapping: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The JSON-serialisable part of ``mapping`` (numpy scalars converted) and omitted keys."""
    kept: dict[str, Any] = {}
    omitted: list[str] = []
    for key, value in mapping.items():
        try:
            text = json.dumps(value, allow_nan=False, default=_json_default)
        except (TypeError, ValueError):
            omitted.append(str(key))
            continue
        kept[str(key)] = json.loads(text)
    return kept, omitted
