"""Ground-truth generators: seeded, integer counts, and the geometry each structure promises."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from stedloop.drivers.simulator.structures import STRUCTURES, generate


@pytest.mark.parametrize("structure", STRUCTURES)
def test_seeded_nonnegative_counts(structure: str) -> None:
    a = generate(structure, 448, 20.0, seed=1)
    assert a.dtype == np.int32 and a.shape == (448, 448)
    assert a.min() >= 0 and a.sum() > 0
    np.testing.assert_array_equal(a, generate(structure, 448, 20.0, seed=1))
    assert not np.array_equal(a, generate(structure, 448, 20.0, seed=2))


def test_unknown_structure() -> None:
    with pytest.raises(ValueError, match="unknown structure"):
        generate("mitochondria", 64, 20.0, seed=0)


def test_label_density_scales_counts() -> None:
    low = generate("tubulin", 448, 20.0, seed=3, label_density=1.0).sum()
    high = generate("tubulin", 448, 20.0, seed=3, label_density=3.0).sum()
    assert high / low == pytest.approx(3.0, rel=0.1)


def test_actin_rings_are_periodic_near_190_nm() -> None:
    """The radially averaged power spectrum has a peak at 1/190 nm⁻¹ (the ring lattice)."""
    truth = generate("actin", 1024, 20.0, seed=4).astype(float)
    truth -= ndimage.uniform_filter(truth, 25)  # remove the axon-scale envelope
    power = np.abs(np.fft.fft2(truth)) ** 2
    freq = np.fft.fftfreq(truth.shape[0], d=20.0)  # cycles per nm
    radius = np.hypot(freq[:, None], freq[None, :])
    bins = np.linspace(1 / 400, 1 / 100, 40)
    index = np.digitize(radius.ravel(), bins)
    profile = np.array([power.ravel()[index == i].mean() for i in range(1, len(bins))])
    centres = 0.5 * (bins[1:] + bins[:-1])
    peak_period_nm = 1 / centres[int(np.argmax(profile))]
    assert peak_period_nm == pytest.approx(190, rel=0.08)


def test_beads_are_isolated_points_at_least_one_micron_apart() -> None:
    truth = generate("beads", 448, 20.0, seed=5)
    ys, xs = np.nonzero(truth)
    assert len(ys) >= 10
    points = np.stack([ys, xs], 1) * 20.0
    distances = np.hypot(*(points[:, None, :] - points[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(distances, np.inf)
    assert distances.min() >= 1000.0
    assert truth[ys, xs].min() >= 20  # many dye molecules per bead


def test_puncta_are_compact_clusters() -> None:
    truth = generate("puncta", 448, 20.0, seed=6)
    labels, n = ndimage.label(ndimage.gaussian_filter(truth.astype(float), 2) > 1.0)
    assert n >= 10
    sizes_px = ndimage.sum(np.ones_like(truth), labels, range(1, n + 1))
    diameters_nm = 2 * np.sqrt(sizes_px / np.pi) * 20.0
    assert 80 <= float(np.median(diameters_nm)) <= 400
