"""Variants of a simulated frame that teach the network photons and structure, not brightness.

In frames taken across the parameter space, noisy frames are dim and clean ones bright, so a
network can learn "bright is good". A real microscope breaks that link (detector gain, line or
frame accumulation, dye brightness), so ``stedloop dataset synth --variants N`` adds, beside
each frame, N copies of it in which brightness and quality part ways, each labelled by the same
synthetic expert from what the copy holds:

- ``starved``: a share f (log-uniform 2-50 %) of the frame's photons (binomial thinning,
  exactly a shorter or dimmer acquisition), brightened by a gain between 1 and 1/f: grainy at
  any brightness. The expert judges the thinned photons: fidelity and SNR fall.
- ``gain``: the same photons times a detector gain (log-uniform 0.5-8): the same picture, the
  same label (with fresh expert noise).
- ``structureless``: the frame's Fourier amplitudes with random phases (the same spectrum and
  counts, no filaments), redrawn as photon counts: the expert sees no structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from stedloop.quality.synth import expert_label, expert_measures

KINDS = ("starved", "gain", "structureless")
#: How often each kind is drawn for a variant.
KIND_WEIGHTS = (0.6, 0.25, 0.15)
MIN_PHOTON_FRACTION, MAX_PHOTON_FRACTION = 0.02, 0.5
MIN_GAIN, MAX_GAIN = 0.5, 8.0
MAX_COUNT = 65535


@dataclass(frozen=True)
class Variant:
    kind: str
    image: np.ndarray  # uint16, what is written
    label: float
    true_score: float
    photon_fraction: float
    gain: float


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _to_uint16(values: np.ndarray) -> np.ndarray:
    counts: np.ndarray = np.clip(np.rint(values), 0, MAX_COUNT).astype(np.uint16)
    return counts


def make_variant(
    rng: np.random.Generator,
    sted_counts: np.ndarray,
    ground_truth: np.ndarray,
    expert_inputs: dict[str, float],
    parent_true_score: float,
) -> Variant:
    """One variant of a frame, of a kind drawn with ``KIND_WEIGHTS``, labelled by the expert.

    ``expert_inputs``: the frame's ``pixel_size_nm``, ``effective_fwhm_nm``,
    ``confocal_fwhm_nm`` and ``surviving_fraction`` (what ``expert_measures`` needs)."""
    kind = str(rng.choice(KINDS, p=KIND_WEIGHTS))
    counts = np.rint(np.clip(sted_counts, 0, None)).astype(np.int64)
    if kind == "gain":
        gain = _log_uniform(rng, MIN_GAIN, MAX_GAIN)
        return Variant(
            kind,
            _to_uint16(counts * gain),
            expert_label(parent_true_score, rng),
            parent_true_score,
            1.0,
            gain,
        )
    if kind == "starved":
        fraction = _log_uniform(rng, MIN_PHOTON_FRACTION, MAX_PHOTON_FRACTION)
        photons = rng.binomial(counts, fraction).astype(np.float64)
        gain = _log_uniform(rng, 1.0, 1.0 / fraction)
        image = photons * gain
    else:
        fraction, gain = 1.0, 1.0
        photons = phase_randomised(rng, counts.astype(np.float64))
        image = photons
    measures = expert_measures(photons, ground_truth, **expert_inputs)
    true_score = measures["true_score"]
    return Variant(
        kind, _to_uint16(image), expert_label(true_score, rng), true_score, fraction, gain
    )


def phase_randomised(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Photon counts with ``image``'s mean and Fourier amplitudes but random phases."""
    spectrum = np.fft.rfft2(image)
    phases = np.exp(1j * rng.uniform(0, 2 * np.pi, spectrum.shape))
    phases[0, 0] = 1.0  # keep the mean
    field = np.fft.irfft2(np.abs(spectrum) * phases, s=image.shape)
    field = np.clip(field, 0, None)
    if field.sum() > 0:
        field *= image.sum() / field.sum()
    return rng.poisson(field).astype(np.float64)


def variant_row(variant: Variant, parent: str) -> dict[str, Any]:
    """The manifest columns a variant adds (beside path, score and structure)."""
    return {
        "variant": variant.kind,
        "parent": parent,
        "photon_fraction": round(variant.photon_fraction, 4),
        "gain": round(variant.gain, 4),
        "true_score": round(variant.true_score, 5),
    }
