"""How a frame travels to the scoring service: raw little-endian bytes, shape and dtype in
headers (a 512 x 512 uint16 frame is 512 KiB on the wire; as a JSON list it would be ~3 MiB
and slow to parse).

Request: ``POST <endpoint>`` with ``Content-Type: application/octet-stream``,
``X-Stedloop-Shape: H,W``, ``X-Stedloop-Dtype: uint16`` (or ``float32``), and
``Authorization: Bearer <token>`` when the service has one. Reply: ``200`` with JSON
``{"score": s, "model_sha256": ..., "batch_size": n, "batch_ms": t}``; ``400`` with ``{"error": ...}`` for an unusable frame;
``401`` for a missing or wrong token. ``GET <endpoint>`` describes the service (``ServiceInfo``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from stedloop.errors import DataError

if TYPE_CHECKING:
    import numpy as np

SHAPE_HEADER = "x-stedloop-shape"
DTYPE_HEADER = "x-stedloop-dtype"
CONTENT_TYPE = "application/octet-stream"
#: The dtypes on the wire, little-endian. The network reads every frame as float32
#: (``preprocess.check_image``), so a float frame sent as float32 scores exactly as locally.
WIRE_DTYPES = {"uint16": "<u2", "float32": "<f4"}
#: Larger frames are refused before their bytes are read into an array.
MAX_SIDE_PX = 16384
MAX_COUNT = 65535


def encode_frame(image: np.ndarray, name: str = "image") -> tuple[bytes, dict[str, str]]:
    """The body and headers of one frame: integer counts as uint16 (lossless within 0..65535),
    anything else as float32; refuses what could not be scored anyway."""
    import numpy as np

    array = np.asarray(image)
    if array.ndim != 2:
        raise DataError(f"{name}: expected a 2-D image, got shape {array.shape}")
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise DataError(f"{name}: unsupported dtype {array.dtype} (expected 16-bit counts)")
    if array.size and np.issubdtype(array.dtype, np.integer):
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > MAX_COUNT:
            raise DataError(
                f"{name}: values {lo}..{hi} are outside the 16-bit count range 0..65535"
            )
        wire = "uint16"
    else:
        wire = "float32"
    data = np.ascontiguousarray(array, dtype=np.dtype(WIRE_DTYPES[wire]))
    headers = {
        "content-type": CONTENT_TYPE,
        SHAPE_HEADER: f"{array.shape[0]},{array.shape[1]}",
        DTYPE_HEADER: wire,
    }
    return data.tobytes(), headers


def decode_frame(body: bytes, headers: Mapping[str, str]) -> np.ndarray:
    """The frame of a request; DataError naming what is wrong with it."""
    import numpy as np

    wire = headers.get(DTYPE_HEADER, "")
    if wire not in WIRE_DTYPES:
        raise DataError(f"{DTYPE_HEADER} must be one of {sorted(WIRE_DTYPES)}, got {wire!r}")
    raw_shape = headers.get(SHAPE_HEADER, "")
    try:
        height, width = (int(part) for part in raw_shape.split(","))
    except ValueError:
        raise DataError(f"{SHAPE_HEADER} must be 'H,W', got {raw_shape!r}") from None
    if not (0 < height <= MAX_SIDE_PX and 0 < width <= MAX_SIDE_PX):
        raise DataError(f"frame shape {height}x{width} is outside 1..{MAX_SIDE_PX} px a side")
    dtype = np.dtype(WIRE_DTYPES[wire])
    expected = height * width * dtype.itemsize
    if len(body) != expected:
        raise DataError(
            f"body holds {len(body)} bytes; a {height}x{width} {wire} frame is {expected}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(height, width)
