"""Turning 16-bit STED images into network input, with one documented size policy.

Policy for images that are not the network's input size (224 x 224 for the shipped model):
an image *larger* in either dimension is **centre-cropped** to the input size (the central
field is kept, like the paper's 224-px crops); an image *smaller* in either dimension is
refused with a :class:`DataError`. Images are never resized or interpolated, because
resampling changes the apparent resolution, which is what the network judges.

Scaling (stored in the checkpoint, so scoring repeats what training did): ``linear`` divides
counts by 65535 (the paper's recipe); ``anscombe`` applies Poisson noise's variance-stabilising
transform, 2·sqrt(c + 3/8), scaled to [0, 1] by its value at 65535. Photon-count frames
taken across the parameter ranges differ in mean counts by three decades (0.3 to 1,100 in the
synthetic training set); the square root narrows that to under two, and makes the noise of
every pixel about the same, so the network's batch-norm statistics are not set by the few
brightest frames. Either way the result is then z-scored with the training set's scalars.

Photon scale (stored in the checkpoint too): ``none`` takes values as photon counts;
``estimated`` first divides each cropped image by its own estimated counts per photon
(``photon_scale.py``), so a detector gain does not change the input and a grainy frame
brightened to a normal mean reads as the few photons it holds.

Accepted values: any real numeric 2-D array whose values are finite counts in
[0, 65535] (uint16 frames, or float photon counts from a simulator). NaN/infinite values,
negative or > 65535 values, and constant images (a dead detector) are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stedloop.errors import DataError
from stedloop.quality.photon_scale import check_photon_scale, to_photons

MAX_COUNT = 65535.0
COUNT_SCALINGS = ("linear", "anscombe")


def check_count_scaling(scaling: str) -> str:
    """``scaling`` if it names a count scaling, else a DataError naming it."""
    if scaling not in COUNT_SCALINGS:
        raise DataError(f"unknown count scaling {scaling!r}; expected one of {COUNT_SCALINGS}")
    return scaling


def scale_counts(counts: np.ndarray, scaling: str = "linear") -> np.ndarray:
    """Counts in [0, 65535] to [0, 1] by ``scaling`` (see the module docstring)."""
    if check_count_scaling(scaling) == "linear":
        return counts / MAX_COUNT
    stabilised: np.ndarray = np.sqrt(counts + 0.375) / np.sqrt(MAX_COUNT + 0.375)
    return stabilised


def scale_images(images: np.ndarray, scaling: str, photon_scale: str = "none") -> np.ndarray:
    """One image (H, W) or a stack (N, H, W) to the network's scale before the z-score: each
    image to photons (``photon_scale``, see ``photon_scale.py``), then ``scale_counts``."""
    if check_photon_scale(photon_scale) == "none":
        return scale_counts(images, scaling)
    if images.ndim == 2:
        return scale_counts(to_photons(images, photon_scale), scaling)
    return np.stack([scale_counts(to_photons(image, photon_scale), scaling) for image in images])


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate one image; return it as float32. ``name`` goes into error messages."""
    if not isinstance(image, np.ndarray):
        raise DataError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 2:
        raise DataError(f"{name}: expected a 2-D image, got shape {image.shape}")
    if image.dtype == np.bool_ or not (
        np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
    ):
        raise DataError(f"{name}: unsupported dtype {image.dtype} (expected 16-bit counts)")
    data = image.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        raise DataError(f"{name}: image contains NaN or infinite values")
    lo, hi = float(data.min()), float(data.max())
    if lo < 0 or hi > MAX_COUNT:
        raise DataError(
            f"{name}: values {lo:g}..{hi:g} are outside the 16-bit count range 0..65535"
        )
    if lo == hi:
        raise DataError(f"{name}: image is constant ({lo:g}); nothing to score")
    return data


def fit_to_size(image: np.ndarray, size_px: int, name: str = "image") -> np.ndarray:
    """Centre-crop to ``size_px`` square; refuse smaller images (see module docstring)."""
    h, w = image.shape
    if h < size_px or w < size_px:
        raise DataError(
            f"{name}: image is {h}x{w} px, smaller than the network's {size_px}x{size_px} "
            "input (images are centre-cropped, never upscaled)"
        )
    top = (h - size_px) // 2
    left = (w - size_px) // 2
    return image[top : top + size_px, left : left + size_px]


def prepare_batch(
    images: Sequence[np.ndarray],
    size_px: int,
    mean: float,
    std: float,
    names: Sequence[str] | None = None,
    scaling: str = "linear",
    photon_scale: str = "none",
) -> np.ndarray:
    """Stack validated, cropped, scaled and z-scored images as (N, 1, S, S) float32."""
    out = np.empty((len(images), 1, size_px, size_px), dtype=np.float32)
    for i, image in enumerate(images):
        name = names[i] if names is not None else f"image {i}"
        data = fit_to_size(check_image(image, name), size_px, name)
        out[i, 0] = (scale_images(data, scaling, photon_scale) - mean) / std
    return out
