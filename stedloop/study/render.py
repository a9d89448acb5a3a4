"""Render a STED image as a PNG for the browser: auto-contrast, colour map, scale bar.

Rendering happens on the server so the browser never receives the TIFF, its file name or its
metadata (part of the blinding). The PNG carries no text chunks.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from stedloop.errors import DataError

DEFAULT_PIXEL_SIZE_NM = 20.0
_DEJAVU = "fonts/ttf/DejaVuSans-Bold.ttf"
DISPLAY_SIZE_PX = 448  # frames are enlarged by a whole factor to at least this (224 px -> 448 px)


def auto_contrast(image: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Scale to [0, 1] between two percentiles, so a few hot pixels do not wash out the frame."""
    data = np.asarray(image, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        raise DataError("image contains NaN or infinite values")
    low, high = np.percentile(data, [low_pct, high_pct])
    if high <= low:  # flat or nearly flat image: fall back to the full range
        low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros_like(data)
    scaled: np.ndarray = np.clip((data - low) / (high - low), 0.0, 1.0)
    return scaled


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans shipped with matplotlib: has the µ glyph that PIL's default font lacks."""
    try:
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / _DEJAVU), size)
    except OSError:
        return ImageFont.load_default()


def _scale_bar_length_um(field_um: float) -> float:
    """A round bar length near a fifth of the field width."""
    for length in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0):
        if length >= field_um / 5:
            return length
    return 100.0


def render_png(
    image: np.ndarray,
    pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM,
    cmap: str = "hot",
    scale: int | None = None,
) -> bytes:
    """The image as PNG bytes with a labelled scale bar in the lower right corner.

    Enlarged by a whole factor (nearest neighbour: no smoothing of the noise), by default to
    at least ``DISPLAY_SIZE_PX``, so the bar's label has the same size on every frame.
    """
    if pixel_size_nm <= 0:
        raise DataError(f"pixel size must be positive, got {pixel_size_nm} nm")
    scaled = auto_contrast(image)
    rgb = (colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8)
    picture = Image.fromarray(rgb, mode="RGB")
    height_px, width_px = scaled.shape
    if scale is None:
        scale = max(1, -(-DISPLAY_SIZE_PX // max(height_px, width_px)))
    if scale > 1:
        picture = picture.resize((width_px * scale, height_px * scale), Image.Resampling.NEAREST)
    bar_um = _scale_bar_length_um(width_px * pixel_size_nm / 1000.0)
    bar_px = round(bar_um * 1000.0 / pixel_size_nm * scale)
    draw = ImageDraw.Draw(picture)
    margin = 12
    bar_h = max(4, picture.height // 56)  # 8 px on a 448 px picture
    x1 = picture.width - margin
    x0 = x1 - bar_px + 1  # PIL rectangles include both ends: exactly bar_px columns
    y1 = picture.height - margin
    y0 = y1 - bar_h
    label = f"{bar_um:g} µm"
    font = _font(15 if scale > 1 else 10)
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    text_x = x0 + (bar_px - (right - left)) / 2
    text_y = y0 - (bottom - top) - 8
    # A dark backing keeps bar and label readable on bright structures.
    pad = 5
    draw.rectangle(
        [min(x0, text_x) - pad, text_y - pad, max(x1, text_x + right - left) + pad, y1 + pad],
        fill=(0, 0, 0),
    )
    draw.rectangle([x0, y0, x1, y1], fill=(255, 255, 255))
    draw.text((text_x, text_y - top), label, fill=(255, 255, 255), font=font)
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=False)
    return out.getvalue()
