"""Default simulated frames look like the real STED frames in count level and sparsity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stedloop.driver import AcquireRequest
from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions
from stedloop.frame import Region
from stedloop.params import ImagingParams
from stedloop.tiffio import read_image_tiff

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_sted"
TYPICAL = ImagingParams(dwell_time_us=10.0, excitation_uw=5.0, depletion_mw=150.0)


def _stats(image: np.ndarray) -> dict[str, float]:
    image = image.astype(float)
    return {
        "max": float(image.max()),
        "mean": float(image.mean()),
        "zero_fraction": float((image == 0).mean()),
        "p99": float(np.percentile(image, 99)),
    }


@pytest.fixture(scope="module")
def real_stats() -> dict[str, float]:
    files = sorted(REAL.glob("*.tif")) if REAL.is_dir() else []
    if not files:
        pytest.skip("shared/data/real_sted not present")
    per_file = [_stats(read_image_tiff(f)) for f in files]
    return {key: float(np.mean([s[key] for s in per_file])) for key in per_file[0]}


@pytest.fixture(scope="module")
def simulated_stats() -> dict[str, float]:
    driver = SimulatorDriver(SimulatorOptions(structure="actin", seed=0, sample_fields=3))
    driver.connect()
    per_frame = [
        _stats(driver.acquire(AcquireRequest(TYPICAL, Region(ix * 4.48, iy * 4.48, 224, 224))).sted)
        for ix in range(3)
        for iy in range(3)
    ]
    return {key: float(np.median([s[key] for s in per_frame])) for key in per_frame[0]}


def test_count_levels_match_real_frames(
    real_stats: dict[str, float], simulated_stats: dict[str, float]
) -> None:
    # Real: maxima ~130–160 counts, means ~7–8; typical simulated frames within 2x.
    for key in ("max", "mean", "p99"):
        ratio = simulated_stats[key] / real_stats[key]
        assert 0.5 <= ratio <= 2.0, (
            f"{key}: simulated {simulated_stats[key]:.3g} vs real {real_stats[key]:.3g}"
        )


def test_sparsity_matches_real_frames(
    real_stats: dict[str, float], simulated_stats: dict[str, float]
) -> None:
    assert simulated_stats["zero_fraction"] == pytest.approx(real_stats["zero_fraction"], abs=0.15)


def test_default_frames_sit_in_the_published_range(simulated_stats: dict[str, float]) -> None:
    assert 40 <= simulated_stats["max"] <= 250
    assert 1 <= simulated_stats["mean"] <= 10
