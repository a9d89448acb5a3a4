"""Sharpness: how steep the STED image's edges are for its brightness, in 1/µm.

score = RMS intensity gradient / mean foreground intensity, after a light Gaussian
smoothing that keeps photon noise from passing for detail and a background subtraction
(a low percentile) so a dim haze does not dilute the structures. The gradient is taken per
micrometre, so the value does not depend on the pixel size and grows as structures get
narrower; dividing by the intensity makes it independent of brightness (dwell time,
excitation), so it rewards resolution, not photons. Higher is sharper.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from scipy import ndimage

from stedloop import PLUGIN_API_VERSION
from stedloop.errors import DataError
from stedloop.frame import Frame


class SharpnessObjective:
    """Objective plugin (contract: ``API_VERSION``, ``name``, ``unit``, ``direction``,
    ``evaluate(frame) -> float``)."""

    API_VERSION: ClassVar[str] = PLUGIN_API_VERSION
    name: str = "sharpness"
    unit: str = "1/µm"
    direction: Literal["maximize", "minimize"] = "maximize"

    def __init__(self, smoothing_nm: float = 20.0, background_percentile: float = 10.0) -> None:
        if not smoothing_nm >= 0:
            raise ValueError(f"smoothing_nm must be >= 0, got {smoothing_nm!r}")
        if not 0 <= background_percentile < 100:
            raise ValueError(
                f"background_percentile must be in [0, 100), got {background_percentile!r}"
            )
        self.smoothing_nm = smoothing_nm
        self.background_percentile = background_percentile

    @classmethod
    def from_config(cls, config: Any = None) -> SharpnessObjective:
        """Built with defaults; the plugin has no settings of its own yet."""
        return cls()

    def evaluate(self, frame: Frame) -> float:
        return self.sharpness(frame.sted, frame.pixel_size_nm)

    def sharpness(self, image: np.ndarray, pixel_size_nm: float) -> float:
        """Sharpness of one 2-D image in 1/µm; raises DataError for unusable images."""
        data = np.asarray(image, dtype=np.float64)
        if data.ndim != 2 or min(data.shape) < 3:
            raise DataError(f"sharpness needs a 2-D image of at least 3x3 px, got {data.shape}")
        if not np.isfinite(data).all():
            raise DataError("sharpness: the image holds NaN or infinite values")
        sigma_px = self.smoothing_nm / pixel_size_nm
        smooth = ndimage.gaussian_filter(data, sigma_px) if sigma_px > 0 else data
        smooth = smooth - np.percentile(smooth, self.background_percentile)
        foreground = smooth[smooth > 0]
        if foreground.size == 0 or float(foreground.mean()) <= 0:
            raise DataError("sharpness: the image is constant (no structure to measure)")
        pixel_um = pixel_size_nm / 1000.0
        grad_y, grad_x = np.gradient(smooth, pixel_um)
        rms_gradient = float(np.sqrt(np.mean(grad_x**2 + grad_y**2)))
        mean_intensity = float(np.mean(np.clip(smooth, 0, None)))
        return rms_gradient / mean_intensity
