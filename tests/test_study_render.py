"""Server-side rendering of study images: auto-contrast and scale bar."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from stedloop.errors import DataError
from stedloop.study.render import auto_contrast, render_png


def test_auto_contrast_ignores_a_few_hot_pixels() -> None:
    image = np.tile(np.arange(100, dtype=np.float64), (100, 1))
    image[0, 0] = 1e6  # one hot pixel must not wash out the frame
    scaled = auto_contrast(image)
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    assert 0.45 < scaled[50, 50] < 0.55


def test_flat_and_bad_images() -> None:
    assert np.all(auto_contrast(np.full((8, 8), 7.0)) == 0.0)
    with pytest.raises(DataError, match="NaN"):
        auto_contrast(np.array([[1.0, np.nan]]))
    with pytest.raises(DataError, match="pixel size"):
        render_png(np.ones((8, 8)), pixel_size_nm=0)


def test_png_size_and_scale_bar() -> None:
    image = np.zeros((224, 224), np.uint16)
    image[::7, ::5] = 100
    picture = Image.open(io.BytesIO(render_png(image, pixel_size_nm=20.0)))
    assert picture.size == (448, 448)  # 224 px enlarged twice
    rgb = np.asarray(picture.convert("RGB"))

    # Field 4.48 µm -> a 1 µm bar = 50 px = 100 display px of pure white near the bottom.
    def longest_white_run(row: np.ndarray) -> int:
        best = run = 0
        for is_white in (row == 255).all(axis=1):
            run = run + 1 if is_white else 0
            best = max(best, run)
        return best

    assert max(longest_white_run(row) for row in rgb[-40:]) == 100
    # No text chunks that could carry a file name.
    assert not {k for k in picture.info if k not in ("dpi",)}
