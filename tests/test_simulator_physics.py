"""The simulator reproduces the reference numbers of PHYSICS.md (within 10 %)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit

from stedloop.driver import AcquireRequest
from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions, physics
from stedloop.frame import Region
from stedloop.params import ImagingParams

FIELD = Region(0.0, 0.0, 224, 224)
REFERENCE_FWHM_NM = {0: 219, 20: 157, 50: 117, 100: 90, 150: 74, 350: 52}
REFERENCE_SURVIVAL = {35: 0.948, 150: 0.821, 350: 0.694}


def test_saturation_intensity_from_constants() -> None:
    assert physics.saturation_intensity_w_m2() == pytest.approx(2.52e11, rel=0.01)
    # P_sat of the law follows from the donut geometry; the reference fit says 19.9 mW.
    assert physics.saturation_power_mw() == pytest.approx(19.9, rel=0.05)


@pytest.mark.parametrize(("depletion_mw", "reference_nm"), sorted(REFERENCE_FWHM_NM.items()))
def test_effective_psf_width_follows_reference(depletion_mw: int, reference_nm: int) -> None:
    beam = physics.BeamModel(pixel_size_nm=20.0)
    assert beam.effective_fwhm_nm(depletion_mw) == pytest.approx(reference_nm, rel=0.10)


def _gaussian(
    xy: tuple[np.ndarray, np.ndarray], amplitude: float, sigma: float, offset: float
) -> np.ndarray:
    y, x = xy
    return (amplitude * np.exp(-(x**2 + y**2) / (2 * sigma**2)) + offset).ravel()


def _bead_fwhm_nm(frame_images: list[np.ndarray], truths: list[np.ndarray]) -> float:
    """Average the STED patches around every bead and fit a Gaussian; FWHM in nm."""
    half = 12
    patches = []
    for image, truth in zip(frame_images, truths, strict=True):
        for y, x in zip(*np.nonzero(truth), strict=True):
            if half <= y < image.shape[0] - half and half <= x < image.shape[1] - half:
                patches.append(image[y - half : y + half + 1, x - half : x + half + 1])
    assert len(patches) >= 10, "too few beads to measure the PSF"
    mean_patch = np.mean(patches, axis=0)
    grid = np.mgrid[-half : half + 1, -half : half + 1].astype(float)
    p0 = (mean_patch.max(), 3.0, float(np.median(mean_patch)))
    (amplitude, sigma, _offset), _ = curve_fit(_gaussian, grid, mean_patch.ravel(), p0=p0)
    assert amplitude > 0
    return 2.3548 * abs(sigma) * 20.0


@pytest.mark.parametrize("depletion_mw", [0, 50, 150, 350])
def test_fwhm_measured_on_simulated_bead_images(depletion_mw: int) -> None:
    driver = SimulatorDriver(
        SimulatorOptions(structure="beads", seed=3, sample_fields=2, include_ground_truth=True)
    )
    driver.connect()
    params = ImagingParams(dwell_time_us=40.0, excitation_uw=10.0, depletion_mw=depletion_mw)
    images, truths = [], []
    for x_um in (0.0, 4.48):
        for y_um in (0.0, 4.48):
            frame = driver.acquire(AcquireRequest(params, Region(x_um, y_um, 224, 224)))
            images.append(frame.sted.astype(float))
            truths.append(frame.metadata["ground_truth"])
    measured = _bead_fwhm_nm(images, truths)
    assert measured == pytest.approx(REFERENCE_FWHM_NM[depletion_mw], rel=0.10)


@pytest.mark.parametrize(("depletion_mw", "reference"), sorted(REFERENCE_SURVIVAL.items()))
def test_one_frame_bleaching_survival(depletion_mw: int, reference: float) -> None:
    """Survival of one STED frame at 10 µs dwell and the reference excitation (5 µW)."""
    driver = SimulatorDriver(SimulatorOptions(structure="actin", seed=1, sample_fields=1))
    driver.connect()
    frame = driver.acquire(AcquireRequest(ImagingParams(10.0, 5.0, depletion_mw), FIELD))
    assert frame.metadata["sted_surviving_fraction"] == pytest.approx(reference, rel=0.10)


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_a_less_photostable_dye_bleaches_by_its_factor(scale: float) -> None:
    """photobleaching_scale multiplies the rate: survival S becomes S**scale, both laser terms."""

    def sted_survival(options: SimulatorOptions, depletion_mw: float) -> float:
        driver = SimulatorDriver(options)
        driver.connect()
        frame = driver.acquire(AcquireRequest(ImagingParams(10.0, 5.0, depletion_mw), FIELD))
        return frame.metadata["sted_surviving_fraction"]

    for depletion_mw in (0.0, 150.0):  # excitation-only, then mostly STED-driven bleaching
        base = sted_survival(
            SimulatorOptions(structure="actin", seed=1, sample_fields=1), depletion_mw
        )
        scaled = sted_survival(
            SimulatorOptions(
                structure="actin", seed=1, sample_fields=1, photobleaching_scale=scale
            ),
            depletion_mw,
        )
        assert scaled == pytest.approx(base**scale, rel=0.02)
    with pytest.raises(ValueError, match="photobleaching_scale"):
        SimulatorOptions(photobleaching_scale=0)


def test_bleaching_draws_match_the_expected_survival() -> None:
    """The binomial draw removes what the three scans' survival predicts."""
    driver = SimulatorDriver(SimulatorOptions(structure="actin", seed=2, sample_fields=1))
    driver.connect()
    before = driver.fluorophore_map(FIELD).sum()
    frame = driver.acquire(AcquireRequest(ImagingParams(10.0, 5.0, 150.0), FIELD))
    after = driver.fluorophore_map(FIELD).sum()
    expected = frame.metadata["sted_surviving_fraction"]
    # Interior survival of the whole acquire ≈ confocal × STED × confocal survival.
    assert after < before
    assert after / before == pytest.approx(frame.metadata["surviving_fraction"], rel=1e-9)
    assert frame.metadata["surviving_fraction"] == pytest.approx(expected * 0.99**2, rel=0.02)


def test_bleaching_grows_with_depletion_and_excitation() -> None:
    beam = physics.BeamModel(pixel_size_nm=20.0)
    total = {
        (exc, dep): beam.kernels(exc, dep).bleach_rate_per_s.sum()
        for exc in (2.0, 10.0)
        for dep in (0.0, 100.0, 300.0)
    }
    assert total[(2.0, 0.0)] < total[(2.0, 100.0)] < total[(2.0, 300.0)]
    assert total[(2.0, 100.0)] < total[(10.0, 100.0)]


def test_photon_counts_scale_linearly_with_dwell_time() -> None:
    sums = {}
    for dwell_us in (5.0, 10.0, 20.0, 40.0):
        driver = SimulatorDriver(SimulatorOptions(structure="actin", seed=4, sample_fields=1))
        driver.connect()
        frame = driver.acquire(AcquireRequest(ImagingParams(dwell_us, 5.0, 100.0), FIELD))
        # The confocal-before image sees the unbleached sample: counts ∝ dwell exactly.
        sums[dwell_us] = float(frame.confocal_before.sum())
    for dwell_us, total in sums.items():
        assert total / sums[10.0] == pytest.approx(dwell_us / 10.0, rel=0.02)


def test_images_are_poisson_distributed_around_the_mean_field() -> None:
    """Repeated noise draws on a constant map have variance ≈ mean (shot noise)."""
    driver = SimulatorDriver(SimulatorOptions(structure="beads", seed=0, sample_fields=1))
    window = np.full((264, 264), 5.0, np.float32)
    kernels = driver.beam.kernels(5.0, 0.0)
    stack = np.stack([driver._image(window.copy(), kernels, 10e-6, 5.0) for _ in range(40)])
    mean, var = stack.mean(axis=0), stack.var(axis=0, ddof=1)
    assert float(var.mean() / mean.mean()) == pytest.approx(1.0, rel=0.05)


def test_depletion_narrows_and_dims_the_sted_image() -> None:
    results = {}
    for depletion_mw in (0.0, 150.0):
        driver = SimulatorDriver(SimulatorOptions(structure="actin", seed=5, sample_fields=1))
        driver.connect()
        frame = driver.acquire(AcquireRequest(ImagingParams(10.0, 5.0, depletion_mw), FIELD))
        results[depletion_mw] = frame
    assert results[150.0].sted.mean() < 0.5 * results[0.0].sted.mean()
    assert results[150.0].metadata["effective_fwhm_nm"] < results[0.0].metadata["effective_fwhm_nm"]


def test_bleaching_dose_box_sum_equals_the_matrix_form() -> None:
    """The prefix-sum dose equals Σ over scanned beam positions written as matrices."""
    driver = SimulatorDriver(SimulatorOptions(sample_fields=1))
    kernel = driver.beam.kernels(5.0, 150.0).bleach_rate_per_s
    scan = driver._scan_matrix
    np.testing.assert_allclose(driver._box_sum(kernel), scan @ kernel @ scan.T, rtol=1e-10)
    # Interior fluorophores receive the whole kernel; a corner one only a quadrant of it.
    dose = driver._box_sum(kernel)
    assert dose[132, 132] == pytest.approx(kernel.sum())
    assert dose[20, 20] == pytest.approx(kernel[:21, :21].sum())
    assert dose[0, 0] == pytest.approx(kernel[0, 0])
