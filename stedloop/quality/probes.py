"""Probes of what a quality model must do: frames made from one field that an expert judges
in a known order.

- ``degradation_series``: the same field with fewer photons at equal mean, and blurred (the
  recipe of docs/quality.md); each step is worse than the one before;
- ``gained``: the same photons times a gain (a detector or accumulation setting): the image
  shows the same thing, so the score should not move;
- ``structureless``: the same counts without the structure (pixels shuffled, or the Fourier
  phases randomised): nothing for an expert to see.

``tests/test_quality_properties.py`` asserts the properties with these probes and
``benchmarks/bench_quality_properties.py`` prints them for any model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from stedloop.driver import AcquireRequest
from stedloop.frame import Region
from stedloop.params import ImagingParams
from stedloop.quality.variants import phase_randomised

#: Level 0 is the original; higher levels are worse.
PHOTON_FRACTIONS = (1.0, 0.5, 0.2, 0.05, 0.02)
BLUR_SIGMAS_PX = (0.0, 1.0, 2.0, 3.0, 5.0)

Structureless = Literal["shuffled", "phase-randomised"]
STRUCTURELESS_KINDS: tuple[Structureless, ...] = ("shuffled", "phase-randomised")

#: uint16 frames hold photon counts up to this.
_MAX_COUNT = 65535


def _as_uint16(image: np.ndarray) -> np.ndarray:
    clipped: np.ndarray = np.clip(np.rint(image), 0, _MAX_COUNT).astype(np.uint16)
    return clipped


def degradation_series(original: np.ndarray, seed: int) -> dict[str, list[np.ndarray]]:
    """The noise and blur series of one frame (uint16, level 0 first).

    noise: a binomial-like Poisson draw of ``fraction`` of the photons, scaled back to the
    original mean (so the frame is as bright, but grainier); blur: a Gaussian of
    ``sigma`` px, then Poisson noise at the original photon level."""
    rng = np.random.default_rng(seed)
    counts = original.astype(np.float64)
    noise = [counts]
    for fraction in PHOTON_FRACTIONS[1:]:
        draw = rng.poisson(fraction * counts).astype(np.float64)
        noise.append(draw * counts.mean() / max(float(draw.mean()), 1e-9))
    blur = [counts]
    for sigma in BLUR_SIGMAS_PX[1:]:
        smooth = ndimage.gaussian_filter(counts, sigma, mode="reflect")
        blur.append(rng.poisson(smooth).astype(np.float64))
    return {"noise": [_as_uint16(i) for i in noise], "blur": [_as_uint16(i) for i in blur]}


def write_degradation_series(folder: Path, originals: Sequence[np.ndarray]) -> Path:
    """``folder/simulated_I/{noise,blur}_L.tif`` for each original (seed I), laid out as
    ``stedloop evaluate-degradations`` reads them; returns ``folder``."""
    import tifffile

    for i, original in enumerate(originals):
        series = folder / f"simulated_{i}"
        series.mkdir(parents=True)
        for family, images in degradation_series(original, seed=i).items():
            for level, image in enumerate(images):
                tifffile.imwrite(series / f"{family}_{level}.tif", image)
    return folder


def gained(image: np.ndarray, gain: float) -> np.ndarray:
    """The same photons times ``gain``, rounded to whole counts within uint16."""
    return _as_uint16(image.astype(np.float64) * gain)


def structureless(counts: np.ndarray, how: Structureless, rng: np.random.Generator) -> np.ndarray:
    """The same counts without the structure: pixels shuffled, or Fourier phases randomised
    (the same spectrum and photon total, redrawn as photon counts)."""
    if how == "shuffled":
        return rng.permutation(counts.ravel()).reshape(counts.shape)
    return phase_randomised(rng, counts.astype(np.float64))


#: Settings the synthetic expert rates highly (true score 0.85-0.86 in the training set),
#: each on a field of the seed-3 actin sample that holds structure.
_GOOD_SETTINGS = (
    ((12.5, 3.5, 188.0), (3, 0)),
    ((38.5, 1.3, 234.0), (1, 1)),
    ((23.5, 1.9, 169.0), (2, 3)),
)


def good_simulated_frames() -> list[np.ndarray]:
    """Three STED frames of simulated actin at good settings, on fields with structure (an
    expert images structure, not empty glass): originals to degrade."""
    from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions

    options = SimulatorOptions(structure="actin", seed=3, sample_fields=4)
    frames = []
    with SimulatorDriver(options) as driver:
        field_um = 224 * options.pixel_size_nm / 1000.0
        for values, (ix, iy) in _GOOD_SETTINGS:
            region = Region(ix * field_um, iy * field_um, 224, 224)
            if driver.fluorophore_map(region).mean() <= 0.3:
                raise AssertionError(f"field {ix},{iy} of the probe sample holds no structure")
            frames.append(driver.acquire(AcquireRequest(ImagingParams(*values), region)).sted)
    return frames
