"""Sharpness: how steep the STED image's edges are for its brightness, in 1/µm.

score = RMS intensity gradient / mean foreground intensity, after a light Gaussian
smoothing and a background subtraction (a low percentile) so a dim haze does not dilute the
structures. Photon noise also makes gradients; since frame images are photon counts
(Poisson: variance = mean), its expected share of the gradient power is known and
subtracted, so a noisy dim image does not pass for a sharp one. The gradient is taken per
micrometre, so the value does not depend on the pixel size and grows as structures get
narrower; dividing by the intensity makes it independent of brightness (dwell time,
excitation), so it rewards resolution, not photons. Higher is sharper.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from scipy import ndimage

from stedloop.plugin_api import DataError, Frame


class SharpnessObjective:
    """Objective plugin (contract: ``API_VERSION``, ``name``, ``unit``, ``direction``,
    ``evaluate(frame) -> float``)."""

    API_VERSION: ClassVar[str] = "2.0"  # the plugin API this was written for, literally
    name: str = "sharpness"
    unit: str = "1/µm"
    direction: Literal["maximize", "minimize"] = "maximize"
    #: Normalisation range for scalarisation: simulated actin frames span about 5 (confocal,
    #: dim) to 50 (350 mW STED) per µm.
    bounds: tuple[float, float] = (0.0, 60.0)

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
        pixel_um = pixel_size_nm / 1000.0
        smooth = self._smooth(data, sigma_px)
        smooth = smooth - np.percentile(smooth, self.background_percentile)
        foreground = smooth[smooth > 0]
        if foreground.size == 0 or float(foreground.mean()) <= 0:
            raise DataError("sharpness: the image is constant (no structure to measure)")
        grad_y, grad_x = np.gradient(smooth, pixel_um)
        gradient_power = float(np.mean(grad_x**2 + grad_y**2))
        # Poisson noise: each pixel's variance is its mean count; the filter and gradient
        # pass a fixed share of it, the squared sum of their impulse response.
        noise_power = max(float(data.mean()), 0.0) * self._noise_gain(sigma_px, pixel_um)
        signal_power = max(gradient_power - noise_power, 0.0)
        mean_intensity = float(np.mean(np.clip(smooth, 0, None)))
        return float(np.sqrt(signal_power)) / mean_intensity

    @staticmethod
    def _smooth(data: np.ndarray, sigma_px: float) -> np.ndarray:
        return ndimage.gaussian_filter(data, sigma_px) if sigma_px > 0 else data

    def _noise_gain(self, sigma_px: float, pixel_um: float) -> float:
        """Sum of squares of the smoothing + gradient impulse response (per µm²)."""
        half = int(np.ceil(4 * sigma_px)) + 2
        impulse = np.zeros((2 * half + 1, 2 * half + 1))
        impulse[half, half] = 1.0
        response = self._smooth(impulse, sigma_px)
        kernel_y, kernel_x = np.gradient(response, pixel_um)
        return float(np.sum(kernel_x**2) + np.sum(kernel_y**2))
