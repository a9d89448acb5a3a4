"""Seedable ground-truth samples: fluorophore counts per pixel.

Each generator draws individual fluorophore positions (in nm) from a model of the structure
and bins them into pixels, so the map holds integer counts. A sample is much larger than one
field, so a session can move to fresh regions. Densities are per nm (lines) or per nm²
(areas) and scaled by ``label_density``; the defaults are calibrated so that frames at
typical settings have the count levels of the real frames in shared/data/real_sted.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

STRUCTURES: tuple[str, ...] = ("actin", "tubulin", "puncta", "beads")

#: Field edge used to scale how many objects a sample holds (224 px of 20 nm).
_FIELD_NM = 4480.0


def generate(
    structure: str,
    size_px: int,
    pixel_size_nm: float,
    seed: int,
    label_density: float = 1.0,
) -> np.ndarray:
    """An int32 (size_px, size_px) map of fluorophore counts for ``structure``."""
    try:
        generator = _GENERATORS[structure]
    except KeyError:
        raise ValueError(
            f"unknown structure {structure!r}; expected one of {', '.join(STRUCTURES)}"
        ) from None
    rng = np.random.default_rng([seed, STRUCTURES.index(structure)])
    size_nm = size_px * pixel_size_nm
    xs, ys = generator(rng, size_nm, label_density)
    xs = np.concatenate(
        [xs, rng.uniform(0, size_nm, _nonspecific_count(rng, size_nm, structure, label_density))]
    )
    ys = np.concatenate([ys, rng.uniform(0, size_nm, xs.size - ys.size)])
    return _bin(xs, ys, size_px, pixel_size_nm)


def _nonspecific_count(
    rng: np.random.Generator, size_nm: float, structure: str, label_density: float
) -> int:
    # Unspecific binding: a few isolated labels everywhere (none for a clean bead slide).
    per_nm2 = 0.0 if structure == "beads" else 2.5e-5
    return int(rng.poisson(per_nm2 * label_density * size_nm**2))


def _bin(xs: np.ndarray, ys: np.ndarray, size_px: int, pixel_size_nm: float) -> np.ndarray:
    ix = np.floor(xs / pixel_size_nm).astype(np.int64)
    iy = np.floor(ys / pixel_size_nm).astype(np.int64)
    inside = (ix >= 0) & (ix < size_px) & (iy >= 0) & (iy < size_px)
    flat = iy[inside] * size_px + ix[inside]
    counts = np.bincount(flat, minlength=size_px * size_px)
    return counts.reshape(size_px, size_px).astype(np.int32)


def _curve(
    rng: np.random.Generator, size_nm: float, step_nm: float, wobble_rad: float, margin: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A gently curved path crossing the sample: (x, y, heading) every ``step_nm``."""
    start = rng.uniform(-margin * size_nm, (1 + margin) * size_nm, 2)
    heading0 = rng.uniform(0, 2 * math.pi)
    # Aim roughly through the sample: from a start point, go towards a random inner point.
    target = rng.uniform(0.2 * size_nm, 0.8 * size_nm, 2)
    heading0 = math.atan2(target[1] - start[1], target[0] - start[0]) + rng.normal(0, 0.3)
    n = int(2.2 * size_nm / step_nm) + 2
    # Smooth curvature: a random walk of the heading, low-pass filtered.
    turns = rng.normal(0, wobble_rad, n)
    kernel = np.hanning(61)
    heading = heading0 + np.cumsum(np.convolve(turns, kernel / kernel.sum(), mode="same"))
    x = start[0] + np.cumsum(step_nm * np.cos(heading))
    y = start[1] + np.cumsum(step_nm * np.sin(heading))
    return x, y, heading


def _points_along(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    heading: np.ndarray,
    step_nm: float,
    per_nm: float,
    width_sigma_nm: float,
    offset_nm: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fluorophores along a path with Gaussian lateral spread."""
    n = int(rng.poisson(per_nm * step_nm * x.size))
    idx = rng.integers(0, x.size, n)
    along = rng.uniform(0, step_nm, n)
    across = offset_nm + rng.normal(0, width_sigma_nm, n)
    c, s = np.cos(heading[idx]), np.sin(heading[idx])
    return x[idx] + along * c - across * s, y[idx] + along * s + across * c


def _actin(
    rng: np.random.Generator, size_nm: float, density: float
) -> tuple[np.ndarray, np.ndarray]:
    """Axons (0.5–1 µm wide) with periodic actin rings every ~190 nm, plus fibres."""
    step = 10.0
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    n_axons = max(1, rng.poisson(1.3 * size_nm / _FIELD_NM))
    for _ in range(n_axons):
        x, y, heading = _curve(rng, size_nm, step, 0.004)
        width = rng.uniform(500, 1000)
        length = step * x.size
        period = rng.normal(190.0, 4.0)
        ring_s = np.arange(rng.uniform(0, period), length, period)
        ring_s = ring_s + rng.normal(0, 8.0, ring_s.size)
        # Rings are not everywhere: patches of the lattice are missing or faint.
        ring_s = ring_s[rng.random(ring_s.size) < 0.85]
        per_ring = rng.poisson(density * 0.33 * math.pi * width, ring_s.size)
        s = np.repeat(ring_s, per_ring) + rng.normal(0, 12.0, per_ring.sum())
        # A ring around a cylinder projects to a band whose density peaks at the edges.
        u = 0.5 * width * np.sin(rng.uniform(0, 2 * math.pi, s.size))
        idx = np.clip((s / step).astype(np.int64), 0, x.size - 1)
        c, sn = np.cos(heading[idx]), np.sin(heading[idx])
        xs.append(x[idx] - u * sn)
        ys.append(y[idx] + u * c)
        # Longitudinal fibres inside the axon.
        for _ in range(rng.integers(1, 4)):
            fx, fy = _points_along(
                rng, x, y, heading, step, density * 0.25, 10.0, rng.uniform(-0.4, 0.4) * width
            )
            xs.append(fx)
            ys.append(fy)
    # Free actin fibres between the axons.
    for _ in range(rng.poisson(2.0 * size_nm / _FIELD_NM)):
        x, y, heading = _curve(rng, size_nm, step, 0.01)
        fx, fy = _points_along(rng, x, y, heading, step, density * 0.35, 12.0)
        xs.append(fx)
        ys.append(fy)
    return np.concatenate(xs), np.concatenate(ys)


def _tubulin(
    rng: np.random.Generator, size_nm: float, density: float
) -> tuple[np.ndarray, np.ndarray]:
    """Long, gently curved ~25 nm filaments that cross each other."""
    step = 10.0
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for _ in range(max(2, rng.poisson(5.0 * size_nm / _FIELD_NM))):
        x, y, heading = _curve(rng, size_nm, step, 0.006)
        fx, fy = _points_along(rng, x, y, heading, step, density * 0.7, 25.0 / 2.355)
        xs.append(fx)
        ys.append(fy)
    return np.concatenate(xs), np.concatenate(ys)


def _puncta(
    rng: np.random.Generator, size_nm: float, density: float
) -> tuple[np.ndarray, np.ndarray]:
    """Synaptic clusters, 100–300 nm across, mostly along dendrite-like paths."""
    centres_x: list[np.ndarray] = []
    centres_y: list[np.ndarray] = []
    fields = (size_nm / _FIELD_NM) ** 2
    for _ in range(max(1, rng.poisson(1.0 * size_nm / _FIELD_NM))):
        x, y, _ = _curve(rng, size_nm, 10.0, 0.006)
        n = rng.poisson(0.0045 * x.size)
        idx = rng.integers(0, x.size, n)
        centres_x.append(x[idx] + rng.normal(0, 350, n))
        centres_y.append(y[idx] + rng.normal(0, 350, n))
    n_free = rng.poisson(15 * fields)
    centres_x.append(rng.uniform(0, size_nm, n_free))
    centres_y.append(rng.uniform(0, size_nm, n_free))
    cx, cy = np.concatenate(centres_x), np.concatenate(centres_y)
    diameter = rng.uniform(100, 300, cx.size)
    per_cluster = rng.poisson(density * 0.012 * math.pi * (diameter / 2) ** 2)
    sigma = np.repeat(diameter / 4, per_cluster)
    xs = np.repeat(cx, per_cluster) + rng.normal(0, 1, sigma.size) * sigma
    ys = np.repeat(cy, per_cluster) + rng.normal(0, 1, sigma.size) * sigma
    return xs, ys


def _beads(
    rng: np.random.Generator, size_nm: float, density: float
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse point emitters (≤ 20 nm beads), at least 1 µm apart, for PSF checks."""
    # One bead per 1.2 µm cell (80 % of cells), jittered within the central 0.2 µm, so
    # neighbours are at least 1 µm apart and each PSF can be measured on its own.
    cell_nm = 1200.0
    n_cells = int(size_nm // cell_nm)
    gx, gy = np.meshgrid(np.arange(n_cells), np.arange(n_cells))
    occupied = rng.random(gx.size) < 0.8
    jitter = rng.uniform(-100.0, 100.0, (int(occupied.sum()), 2))
    centres = np.stack([gx.ravel()[occupied], gy.ravel()[occupied]], 1) * cell_nm
    centres = centres + 0.5 * cell_nm + jitter
    per_bead = rng.poisson(density * 60.0, centres.shape[0])
    # All of a bead's dye sits in one pixel: a point source on a 20 nm grid.
    xs = np.repeat(centres[:, 0], per_bead)
    ys = np.repeat(centres[:, 1], per_bead)
    return xs, ys


_GENERATORS: dict[
    str, Callable[[np.random.Generator, float, float], tuple[np.ndarray, np.ndarray]]
] = {
    "actin": _actin,
    "tubulin": _tubulin,
    "puncta": _puncta,
    "beads": _beads,
}


def patchy_coverage(
    counts: np.ndarray,
    seed: int,
    pixel_size_nm: float,
    empty_fraction: float,
    sparse_fraction: float,
    patch_size_um: float,
    sparse_keep: float = 0.1,
) -> np.ndarray:
    """``counts`` thinned by patches, as on a real coverslip: ``empty_fraction`` of the area
    holds no label at all, ``sparse_fraction`` keeps only ``sparse_keep`` of its labels.

    The patches are the level sets of smooth random noise (correlation length about
    ``patch_size_um``), so empty and sparse areas are contiguous and a few fields across.
    Thinning is binomial: the map keeps integer counts. Its own random stream (``seed``, 7),
    so the structure itself is the same as without patches."""
    if empty_fraction <= 0 and sparse_fraction <= 0:
        return counts
    import scipy.ndimage

    rng = np.random.default_rng([seed, 7])
    size = counts.shape[0]
    # Smooth noise on a coarse grid (one cell per ~patch/4), then up-sampled to the pixels.
    cell_px = max(1, round(patch_size_um * 1000 / pixel_size_nm / 4))
    coarse = rng.normal(size=(size // cell_px + 2, size // cell_px + 2))
    coarse = scipy.ndimage.gaussian_filter(coarse, sigma=2.0, mode="wrap")
    noise = scipy.ndimage.zoom(coarse, cell_px, order=1)[:size, :size]
    empty_level = np.quantile(noise, empty_fraction) if empty_fraction > 0 else -np.inf
    sparse_level = np.quantile(noise, min(1.0, empty_fraction + sparse_fraction))
    keep = np.ones_like(noise)
    keep[noise < sparse_level] = sparse_keep
    keep[noise < empty_level] = 0.0
    thinned: np.ndarray = rng.binomial(counts, keep).astype(np.int32)
    return thinned
