"""The sharpness objective: sharper structures score higher, brightness does not matter."""

from __future__ import annotations

import numpy as np
import pytest

from stedloop import registry
from stedloop.errors import DataError
from stedloop.frame import Frame, Region
from stedloop.params import ImagingParams
from stedloop.plugins.sharpness import SharpnessObjective

PIXEL_NM = 20.0


def filaments(
    fwhm_nm: float,
    peak: float = 50.0,
    background: float = 2.0,
    px: int = 128,
    pixel_nm: float = PIXEL_NM,
) -> np.ndarray:
    """Three straight filaments (Gaussian profiles of the given FWHM) on a flat background."""
    sigma_px = fwhm_nm / 2.355 / pixel_nm
    x = np.arange(px)
    profile = sum(np.exp(-0.5 * ((x - c) / sigma_px) ** 2) for c in (px * 0.25, px * 0.5, px * 0.8))
    return background + peak * np.tile(profile, (px, 1))


def noisy(image: np.ndarray, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(image).astype(np.uint16)


def frame_of(sted: np.ndarray) -> Frame:
    params = ImagingParams(10.0, 5.0, 100.0)
    region = Region(0.0, 0.0, sted.shape[1], sted.shape[0])
    return Frame(sted, sted, sted, params, region, PIXEL_NM, 0.0, 1.0)


def test_sharper_filaments_score_higher_through_noise() -> None:
    objective = SharpnessObjective()
    scores = [objective.evaluate(frame_of(noisy(filaments(w)))) for w in (60, 120, 250)]
    assert scores[0] > scores[1] > scores[2]
    assert scores[0] > 1.5 * scores[2]


def test_photon_noise_does_not_pass_for_detail() -> None:
    objective = SharpnessObjective()
    rng = np.random.default_rng(1)
    flat = rng.poisson(3.0, size=(128, 128)).astype(np.uint16)  # no structure, only noise
    structured = objective.sharpness(noisy(filaments(100)), PIXEL_NM)
    assert objective.sharpness(flat, PIXEL_NM) < 0.3 * structured
    # The same filaments imaged dim and bright score alike, noise notwithstanding.
    dim = objective.sharpness(noisy(filaments(100, peak=8, background=0.5), seed=2), PIXEL_NM)
    bright = objective.sharpness(noisy(filaments(100, peak=800, background=50), seed=3), PIXEL_NM)
    assert dim == pytest.approx(bright, rel=0.3)


def test_brightness_does_not_change_the_score() -> None:
    objective = SharpnessObjective()
    # Photon noise aside (high counts), the score does not depend on brightness.
    bright = objective.sharpness(filaments(100, peak=2000, background=100), PIXEL_NM)
    brighter = objective.sharpness(filaments(100, peak=20000, background=1000), PIXEL_NM)
    assert bright == pytest.approx(brighter, rel=0.02)


def test_unit_is_per_micrometre_independent_of_pixel_size() -> None:
    objective = SharpnessObjective(smoothing_nm=0.0)
    fine = objective.sharpness(filaments(200, px=256, pixel_nm=10.0), 10.0)
    coarse = objective.sharpness(filaments(200, px=128, pixel_nm=20.0), 20.0)
    assert fine == pytest.approx(coarse, rel=0.05)


@pytest.mark.parametrize(
    ("image", "text"),
    [
        (np.full((32, 32), 7.0), "constant"),
        (np.ones((2, 32)), "at least 3x3"),
        (np.full((8, 8), np.nan), "NaN"),
    ],
)
def test_unusable_images_are_refused(image: np.ndarray, text: str) -> None:
    with pytest.raises(DataError, match=text):
        SharpnessObjective().sharpness(image, PIXEL_NM)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="background_percentile"):
        SharpnessObjective(background_percentile=100)


def test_registered_as_an_objective_plugin() -> None:
    cls = registry.load(registry.OBJECTIVES, "sharpness")
    assert cls is SharpnessObjective
    objective = cls.from_config(None)
    assert (objective.name, objective.unit, objective.direction) == (
        "sharpness",
        "1/µm",
        "maximize",
    )
