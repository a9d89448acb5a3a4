"""Messages between the daemon and a driver worker: JSON headers plus raw array buffers.

Every message is a ZeroMQ multipart message whose first part is a UTF-8 JSON header (a dict
with a ``type``); array data follows as raw buffers, one part per array, described in the
header by dtype and shape. Nothing is pickled: only JSON values and numeric arrays cross, so a
worker running another Python or numpy version (the one ``specpy`` was built for) can talk to
the daemon, and a message can never execute code when it is decoded.

Types, daemon -> worker: ``call`` (a driver method, with ``id``), ``abort``, ``ping`` (with
``id``), ``keepalive``, ``shutdown``. Worker -> daemon: ``hello``, ``heartbeat``, ``reply``
(to a call, with ``id``), ``pong`` (to a ping), ``abort_ack``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from stedloop import errors
from stedloop.driver import DriverDescription
from stedloop.errors import DriverError
from stedloop.frame import IMAGE_NAMES, Frame, Overview

#: Bumped when a message changes shape; worker and daemon refuse to talk across versions.
PROTOCOL_VERSION = 2  # 2: acquire carries a whole AcquireRequest (raw output included)

#: Appended to the worker's token to name the socket that carries the driver thread's replies.
REPLY_SUFFIX = "r"

#: Driver methods a ``call`` may name (``init`` builds the driver inside the worker).
CALL_METHODS = ("init", "connect", "describe", "acquire", "acquire_overview", "safe_state", "close")

#: Exceptions that keep their type across the boundary; anything else arrives as DriverError.
_TYPED_ERRORS: dict[str, type[errors.StedloopError]] = {
    cls.__name__: cls
    for cls in (
        errors.StedloopError,
        errors.ConfigError,
        errors.ParameterRejected,
        errors.SafetyCapExceeded,
        errors.DriverError,
        errors.DriverDisconnected,
        errors.RegionError,
        errors.AcquisitionAborted,
        errors.PluginError,
        errors.DataError,
    )
}

#: Array kinds allowed on the wire: booleans, integers, unsigned integers, floats.
_ARRAY_KINDS = frozenset("biuf")


class ProtocolError(DriverError):
    """A message from the other side is malformed (a bug or a version mismatch)."""


# -- headers -----------------------------------------------------------------------------------
def encode_header(header: dict[str, Any]) -> bytes:
    return json.dumps(header, default=_json_default, separators=(",", ":")).encode("utf-8")


def decode_header(data: bytes | memoryview) -> dict[str, Any]:
    try:
        header = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"worker message header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("worker message header must be a JSON object with a 'type'")
    return header


def _json_default(value: Any) -> Any:
    # numpy scalars are common in driver metadata; arrays are sent as buffers, never as JSON.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


# -- arrays ------------------------------------------------------------------------------------
def array_spec(array: np.ndarray) -> dict[str, Any]:
    return {"dtype": array.dtype.str, "shape": list(array.shape)}


def check_array(array: np.ndarray, what: str) -> np.ndarray:
    """A C-contiguous numeric array fit to send as a raw buffer (copied only if needed)."""
    if array.dtype.kind not in _ARRAY_KINDS:
        raise DriverError(f"{what} has dtype {array.dtype}, which cannot cross to the daemon")
    return np.ascontiguousarray(array)


def array_from_buffer(spec: Any, buffer: memoryview | bytes, what: str) -> np.ndarray:
    """Rebuild an array from its header spec and raw buffer without copying (read-only)."""
    if not isinstance(spec, dict):
        raise ProtocolError(f"{what}: array spec must be an object")
    try:
        dtype = np.dtype(str(spec["dtype"]))
        shape = tuple(int(n) for n in spec["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"{what}: bad array spec {spec!r} ({exc})") from None
    if dtype.kind not in _ARRAY_KINDS or dtype.hasobject:
        raise ProtocolError(f"{what}: dtype {dtype} is not allowed on the wire")
    if any(n < 0 for n in shape):
        raise ProtocolError(f"{what}: negative dimension in {shape}")
    expected = math.prod(shape) * dtype.itemsize
    view = memoryview(buffer)
    if view.nbytes != expected:
        raise ProtocolError(
            f"{what}: buffer holds {view.nbytes} bytes, {dtype}{list(shape)} needs {expected}"
        )
    return np.frombuffer(view, dtype=dtype).reshape(shape)


# -- frames ------------------------------------------------------------------------------------
def encode_frame(frame: Frame) -> tuple[dict[str, Any], list[np.ndarray]]:
    """A frame as a JSON-safe header and the list of array buffers that follow it.

    Metadata values that are numpy arrays (the simulator's ``ground_truth``) travel as extra
    buffers; every other metadata value must be JSON-serialisable.
    """
    buffers = [check_array(getattr(frame, name), f"frame image {name}") for name in IMAGE_NAMES]
    metadata: dict[str, Any] = {}
    metadata_arrays: list[dict[str, Any]] = []
    for key, value in frame.metadata.items():
        if isinstance(value, np.ndarray):
            array = check_array(value, f"frame metadata {key!r}")
            metadata_arrays.append({"key": str(key), **array_spec(array)})
            buffers.append(array)
            continue
        try:
            json.dumps(value, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise DriverError(
                f"frame metadata {key!r} cannot be sent to the daemon: {exc}"
            ) from None
        metadata[str(key)] = value
    header = {
        "images": [array_spec(a) for a in buffers[: len(IMAGE_NAMES)]],
        **frame.facts(),
        "metadata": metadata,
        "metadata_arrays": metadata_arrays,
    }
    return header, buffers


def decode_frame(header: dict[str, Any], buffers: Sequence[memoryview | bytes]) -> Frame:
    """Rebuild a frame; its arrays are read-only views of the received buffers (no copy)."""
    try:
        image_specs = header["images"]
        array_specs = header.get("metadata_arrays", [])
        if len(image_specs) != len(IMAGE_NAMES):
            raise ProtocolError(f"a frame needs {len(IMAGE_NAMES)} images, got {len(image_specs)}")
        if len(buffers) != len(image_specs) + len(array_specs):
            raise ProtocolError(
                f"frame header announces {len(image_specs) + len(array_specs)} buffers, "
                f"{len(buffers)} arrived"
            )
        images = [
            array_from_buffer(spec, buf, f"frame image {name}")
            for name, spec, buf in zip(IMAGE_NAMES, image_specs, buffers, strict=False)
        ]
        metadata = dict(header.get("metadata", {}))
        for spec, buf in zip(array_specs, buffers[len(IMAGE_NAMES) :], strict=True):
            metadata[str(spec["key"])] = array_from_buffer(spec, buf, f"metadata {spec['key']}")
        return Frame.from_facts(images, header, metadata)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed frame from the worker: {exc!r}") from None


# -- overviews ---------------------------------------------------------------------------------
def encode_overview(overview: Overview) -> tuple[dict[str, Any], list[np.ndarray]]:
    """An overview as a JSON-safe header and its one image buffer."""
    image = check_array(overview.image, "overview image")
    metadata = {}
    for key, value in overview.metadata.items():
        try:
            json.dumps(value, default=_json_default)
        except (TypeError, ValueError):
            continue  # arrays and objects stay in the worker
        metadata[str(key)] = value
    return {"image": array_spec(image), **overview.facts(), "metadata": metadata}, [image]


def decode_overview(header: dict[str, Any], buffers: Sequence[memoryview | bytes]) -> Overview:
    try:
        if len(buffers) != 1:
            raise ProtocolError(f"an overview needs 1 buffer, {len(buffers)} arrived")
        image = array_from_buffer(header["image"], buffers[0], "overview image")
        return Overview.from_facts(image, header, dict(header.get("metadata", {})))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed overview from the worker: {exc!r}") from None


# -- small values ------------------------------------------------------------------------------
def description_from_dict(data: dict[str, Any]) -> DriverDescription:
    try:
        extent = data.get("sample_extent_um")
        return DriverDescription(
            name=str(data["name"]),
            pixel_size_nm=float(data["pixel_size_nm"]),
            field_of_view_px=(int(data["field_of_view_px"][0]), int(data["field_of_view_px"][1])),
            sample_extent_um=(float(extent[0]), float(extent[1])) if extent else None,
            parameter_ranges={
                str(k): (float(v[0]), float(v[1])) for k, v in data["parameter_ranges"].items()
            },
            details=dict(data.get("details", {})),
            abilities=tuple(str(a) for a in data.get("abilities", ())),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ProtocolError(f"malformed driver description from the worker: {exc!r}") from None


def error_to_dict(exc: BaseException) -> dict[str, Any]:
    """An exception as ``{type, message}``.

    The type is the nearest stedloop error class in the exception's ancestry (a plugin's own
    subclass of DriverDisconnected arrives as DriverDisconnected); anything else, a bug in a
    plugin for instance, arrives as DriverError with the original class name in the message.
    """
    for cls in type(exc).__mro__:
        if _TYPED_ERRORS.get(cls.__name__) is cls:
            return {"type": cls.__name__, "message": str(exc)}
    return {"type": "DriverError", "message": f"{type(exc).__name__}: {exc}"}


def error_from_dict(data: Any) -> errors.StedloopError:
    """The exception a worker reported, with its stedloop type (DriverError if unknown)."""
    if not isinstance(data, dict):
        return ProtocolError(f"malformed error from the worker: {data!r}")
    cls = _TYPED_ERRORS.get(str(data.get("type")), DriverError)
    return cls(str(data.get("message", "")))
