"""How many counts one detected photon makes in an image, estimated from the image itself.

What an expert sees in a STED frame is limited by its photons, not by its brightness: a frame
whose values were multiplied by a detector gain, or summed over accumulations and rescaled,
shows the same thing; a frame made of 2 % of the photons and brightened to the same mean is
grainy and worse. Raw values mix both. This module estimates the *photon scale* g (counts per
photon-equivalent) so that ``image / g`` is on the scale of photon counts whatever the
detector did, and the quality network judges photons.

Estimator. For photon counting, a pixel of an image ``y = g · Poisson(λ)`` has mean ``g·λ``
and variance ``g²·λ = g · mean``. For two pixels at distance d,

    D(d) = E[(y_i − y_j)²] = g · (E y_i + E y_j) + S(d),

where S(d) is the structure's own difference. Adjacent pixels of a well-sampled image differ
little in structure, and S grows about with d² at pixel scale, so with the horizontal and
vertical neighbours (d = 1) and the diagonal ones (d² = 2) the structure cancels to first
order: 2·D(1) − D(√2) = 2·g·mean(y). Hence ``g = (2·D(1) − D(√2)) / (2·mean(y))``.

It is exactly equivariant to a gain (g of ``c·y`` is ``c·g``), so a pure gain change gives the
network the same input. On real STED frames of photon counts it reads 1.04–1.05; on frames
made of a fraction f of their photons and brightened back it reads 1 + 1/f, as it should
(their noise is that of the thinned draw plus the original's). Sharp, bright simulated frames
read up to ~1.7: structure finer than the pixel is not fully cancelled; training applies the
same estimate, so the network learns on the scale it is given when scoring.
"""

from __future__ import annotations

import numpy as np

from stedloop.errors import DataError

PHOTON_SCALES = ("none", "estimated")
#: Estimates are kept within this range (counts per photon); beyond it an image is not
#: photon-limited in any sense the estimate can tell.
MIN_SCALE, MAX_SCALE = 1e-2, 1e4
#: The noise term may not fall below this share of the adjacent-pixel difference: an image
#: whose structure changes faster between diagonal neighbours than the model assumes would
#: otherwise get a scale near zero.
MIN_NOISE_SHARE = 0.1


def check_photon_scale(mode: str) -> str:
    """``mode`` if it names a photon-scale mode, else a DataError naming it."""
    if mode not in PHOTON_SCALES:
        raise DataError(f"unknown photon scale {mode!r}; expected one of {PHOTON_SCALES}")
    return mode


def estimate_photon_scale(image: np.ndarray) -> float:
    """Counts per photon of a 2-D image (see the module docstring); 1.0 for an image that is
    all zeros or too small to tell."""
    y = np.asarray(image, dtype=np.float64)
    if y.ndim != 2 or min(y.shape) < 3:
        return 1.0
    mean = float(y.mean())
    if not mean > 0:
        return 1.0
    d1 = (_mean_square(y[1:, :] - y[:-1, :]) + _mean_square(y[:, 1:] - y[:, :-1])) / 2
    diag = (_mean_square(y[1:, 1:] - y[:-1, :-1]) + _mean_square(y[1:, :-1] - y[:-1, 1:])) / 2
    noise = max(2.0 * d1 - diag, MIN_NOISE_SHARE * d1)
    return float(np.clip(noise / (2.0 * mean), MIN_SCALE, MAX_SCALE))


def _mean_square(differences: np.ndarray) -> float:
    # Not np.dot: BLAS may start threads, which cost far more than they save at this size.
    return float(np.mean(np.square(differences)))


def to_photons(image: np.ndarray, mode: str) -> np.ndarray:
    """``image`` divided by its estimated photon scale (``estimated``), or as is (``none``)."""
    if check_photon_scale(mode) == "none":
        return image
    return image / estimate_photon_scale(image)
