"""STED image formation and photobleaching, in SI units (see shared guide PHYSICS.md).

Model, per beam position (pixel) b and fluorophore offset r from the beam centre:

* excitation: a Gaussian spot of FWHM ``0.51 λ_exc / NA`` and total power P_exc; probability
  that a molecule is excited by one pulse ``p_exc = (1 − exp(−σ_abs φ / f_rep))`` with φ the
  photon flux density (saturates at high power);
* depletion: a Laguerre–Gauss (vortex) donut of crest radius ``r0 = 0.4425 λ_sted / NA``;
  with pulses much shorter than the lifetime, a molecule stays fluorescent after the pulse
  with probability ``η = exp(−x)``, ``x = ζ / (τ f_rep)``, ``ζ = I_sted / I_s`` and the
  saturation intensity ``I_s = h c / (τ λ_sted σ_ste)`` (≈ 2.52e11 W/m²);
* detection: a Gaussian (pinhole-limited) detection profile chosen so that the confocal PSF
  (excitation × detection) has the reference FWHM of 221 nm; detection efficiency, quantum
  yield, background (out-of-focus light, proportional to excitation) and dark counts;
* bleaching: a molecule survives one pixel visit with probability ``exp(−k dwell)``,
  ``k = k0 I_exc + s k1 I_sted^b · (p_exc / p_exc,ref) · (1 − e^{−x}) / x``: the STED term
  acts on molecules in S1 (excited-state absorption), whose mean population during the
  depletion pulse is ``p_exc (1 − e^{−x}) / x``. k1 and b are pySTED's defaults; k0 and the
  factor s are calibrated so the reference survival numbers are reproduced at the reference
  excitation (5 µW, 10 µs). These saturation factors are why survival falls less than
  ``P^1.66`` would suggest.

The expected photon count of a pixel is the correlation of the fluorophore map with the
emission kernel (``kernels().emission_per_s``) times the dwell time, plus background; the
measured count is Poisson. Everything that depends only on the geometry is precomputed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

PLANCK_J_S = 6.62607015e-34
LIGHT_SPEED_M_S = 2.99792458e8
FWHM_TO_GAUSS = 4.0 * math.log(2.0)  # exp(-FWHM_TO_GAUSS r^2 / d^2) has FWHM d


@dataclass(frozen=True)
class Dye:
    """A STAR635-like dye (pySTED-like constants)."""

    sigma_abs_m2: float = 3.2e-21
    sigma_ste_m2: float = 3.0e-22
    lifetime_s: float = 3.5e-9
    quantum_yield: float = 0.65
    #: Excitation-driven bleaching rate per W/m² (ours: ≈1 % loss per confocal frame at 5 µW).
    k0_per_w_m2_s: float = 8.04e-8
    #: STED-driven bleaching, pySTED's k1 (for I in W/m²) and exponent b.
    k1_sted: float = 2.9e-16
    b_sted: float = 1.66
    #: Dimensionless factor on the STED term, calibrated to the reference survival numbers.
    sted_bleach_scale: float = 0.545
    #: Excitation power at which the STED term has its calibrated strength.
    reference_excitation_w: float = 5e-6

    def with_bleaching_scale(self, scale: float) -> Dye:
        """The same dye with both bleaching rates multiplied by ``scale`` (photostability)."""
        return replace(
            self,
            k0_per_w_m2_s=self.k0_per_w_m2_s * scale,
            sted_bleach_scale=self.sted_bleach_scale * scale,
        )


@dataclass(frozen=True)
class Optics:
    """Microscope constants (paper: 640/775 nm lasers, 40 MHz, NA 1.4, pinhole 0.7 AU)."""

    excitation_wavelength_m: float = 635e-9
    depletion_wavelength_m: float = 750e-9
    emission_wavelength_m: float = 690e-9
    numerical_aperture: float = 1.4
    pinhole_airy_units: float = 0.7
    repetition_rate_hz: float = 40e6
    #: Depletion pulse width; only needs to be much shorter than the lifetime in this model.
    depletion_pulse_s: float = 400e-12
    #: Confocal (excitation × detection) FWHM, the reference d_conf.
    confocal_fwhm_m: float = 221e-9
    #: Donut crest radius in units of λ_sted / NA.
    donut_crest_factor: float = 0.4425

    @property
    def excitation_fwhm_m(self) -> float:
        return 0.51 * self.excitation_wavelength_m / self.numerical_aperture

    @property
    def detection_fwhm_m(self) -> float:
        """Width of the pinhole-limited detection profile giving the confocal FWHM."""
        inv = 1.0 / self.confocal_fwhm_m**2 - 1.0 / self.excitation_fwhm_m**2
        return 1.0 / math.sqrt(inv)

    @property
    def donut_crest_radius_m(self) -> float:
        return self.donut_crest_factor * self.depletion_wavelength_m / self.numerical_aperture


@dataclass(frozen=True)
class Detector:
    """Detection chain: efficiency and unwanted counts."""

    #: Collection × detector efficiency (calibrated with the labelling density so default
    #: frames have the count levels of real frames).
    detection_efficiency: float = 0.15
    #: Out-of-focus and scattered light, counts per second per µW of excitation.
    background_counts_per_s_per_uw: float = 1.4e4
    dark_counts_per_s: float = 50.0


def saturation_intensity_w_m2(dye: Dye = Dye(), optics: Optics = Optics()) -> float:
    """I_s = h c / (τ λ_sted σ_ste)."""
    return (
        PLANCK_J_S
        * LIGHT_SPEED_M_S
        / (dye.lifetime_s * optics.depletion_wavelength_m * dye.sigma_ste_m2)
    )


def saturation_power_mw(dye: Dye = Dye(), optics: Optics = Optics()) -> float:
    """P_sat of the law FWHM ≈ d_conf / sqrt(1 + P / P_sat), from the donut's curvature.

    Near the centre the donut intensity is ``P r² / (π r0⁴)``; the depletion exponent
    ``x = I / (I_s τ f)`` equals ``FWHM_TO_GAUSS r² / d_conf²`` times ``P / P_sat`` when
    ``P_sat = FWHM_TO_GAUSS π r0⁴ I_s τ f / d_conf²``.
    """
    r0 = optics.donut_crest_radius_m
    p_sat_w = (
        FWHM_TO_GAUSS
        * math.pi
        * r0**4
        * saturation_intensity_w_m2(dye, optics)
        * dye.lifetime_s
        * optics.repetition_rate_hz
        / optics.confocal_fwhm_m**2
    )
    return p_sat_w * 1e3


def fwhm_law_nm(depletion_mw: float, dye: Dye = Dye(), optics: Optics = Optics()) -> float:
    """The saturation law d_conf / sqrt(1 + P / P_sat), in nm (for comparison)."""
    return (
        optics.confocal_fwhm_m
        * 1e9
        / math.sqrt(1.0 + depletion_mw / saturation_power_mw(dye, optics))
    )


@dataclass(frozen=True)
class Kernels:
    """Per-beam-position kernels on the pixel grid, indexed [dy + R, dx + R]."""

    #: Expected detected photons per second from one fluorophore at offset (dy, dx).
    emission_per_s: np.ndarray
    #: Bleaching rate (1/s) of a fluorophore at offset (dy, dx) while the beam dwells.
    bleach_rate_per_s: np.ndarray
    #: FWHM (nm) of the emission kernel, measured on a fine radial profile.
    fwhm_nm: float


class BeamModel:
    """Computes emission and bleaching kernels for given laser powers (cached)."""

    def __init__(
        self,
        pixel_size_nm: float,
        radius_px: int = 20,
        dye: Dye = Dye(),
        optics: Optics = Optics(),
        detector: Detector = Detector(),
    ) -> None:
        self.pixel_size_nm = float(pixel_size_nm)
        self.radius_px = int(radius_px)
        self.dye = dye
        self.optics = optics
        self.detector = detector
        self.saturation_intensity_w_m2 = saturation_intensity_w_m2(dye, optics)
        offsets_m = np.arange(-self.radius_px, self.radius_px + 1) * self.pixel_size_nm * 1e-9
        self._r2_grid_m2 = offsets_m[:, None] ** 2 + offsets_m[None, :] ** 2
        # Fine 1-D radial profile for FWHM measurement (0.25 nm steps out to 400 nm).
        self._r2_fine_m2 = (np.arange(0, 1600) * 0.25e-9) ** 2
        self._cached = lru_cache(maxsize=128)(self._compute)

    # -- elementary fields --------------------------------------------------------------------
    def excitation_intensity_w_m2(self, r2_m2: np.ndarray, power_w: float) -> np.ndarray:
        d = self.optics.excitation_fwhm_m
        peak = power_w * FWHM_TO_GAUSS / (math.pi * d**2)
        return peak * np.exp(-FWHM_TO_GAUSS * r2_m2 / d**2)

    def depletion_intensity_w_m2(self, r2_m2: np.ndarray, power_w: float) -> np.ndarray:
        """LG01 donut: I = P r² / (π r0⁴) exp(−r²/r0²) (integrates to P, zero at the centre)."""
        r0 = self.optics.donut_crest_radius_m
        return power_w * r2_m2 / (math.pi * r0**4) * np.exp(-r2_m2 / r0**2)

    def excitation_probability(self, intensity_w_m2: np.ndarray) -> np.ndarray:
        photon_energy_j = PLANCK_J_S * LIGHT_SPEED_M_S / self.optics.excitation_wavelength_m
        flux = intensity_w_m2 / photon_energy_j
        return -np.expm1(-self.dye.sigma_abs_m2 * flux / self.optics.repetition_rate_hz)

    def depletion_exponent(self, sted_intensity_w_m2: np.ndarray) -> np.ndarray:
        """x = ζ / (τ f): η = exp(−x) of molecules stay fluorescent after a depletion pulse."""
        zeta = sted_intensity_w_m2 / self.saturation_intensity_w_m2
        return zeta / (self.dye.lifetime_s * self.optics.repetition_rate_hz)

    def detection_profile(self, r2_m2: np.ndarray) -> np.ndarray:
        d = self.optics.detection_fwhm_m
        return np.exp(-FWHM_TO_GAUSS * r2_m2 / d**2)

    # -- kernels ------------------------------------------------------------------------------
    def _emission(self, r2: np.ndarray, excitation_w: float, depletion_w: float) -> np.ndarray:
        p_exc = self.excitation_probability(self.excitation_intensity_w_m2(r2, excitation_w))
        eta = np.exp(-self.depletion_exponent(self.depletion_intensity_w_m2(r2, depletion_w)))
        photons_per_pulse = p_exc * self.dye.quantum_yield * eta
        emission: np.ndarray = (
            photons_per_pulse
            * self.optics.repetition_rate_hz
            * self.detector.detection_efficiency
            * self.detection_profile(r2)
        )
        return emission

    def _bleach_rate(self, r2: np.ndarray, excitation_w: float, depletion_w: float) -> np.ndarray:
        dye = self.dye
        i_exc = self.excitation_intensity_w_m2(r2, excitation_w)
        rate = dye.k0_per_w_m2_s * i_exc
        if depletion_w > 0:
            i_sted = self.depletion_intensity_w_m2(r2, depletion_w)
            x = self.depletion_exponent(i_sted)
            # Mean S1 population during the depletion pulse, relative to no depletion.
            occupancy = np.where(x > 1e-12, -np.expm1(-x) / np.maximum(x, 1e-300), 1.0)
            ref_peak = self.excitation_probability(
                self.excitation_intensity_w_m2(np.zeros(1), dye.reference_excitation_w)
            )[0]
            s1 = self.excitation_probability(i_exc) / ref_peak * occupancy
            rate = rate + dye.sted_bleach_scale * dye.k1_sted * i_sted**dye.b_sted * s1
        return rate

    def _compute(self, excitation_uw: float, depletion_mw: float) -> Kernels:
        exc_w, dep_w = excitation_uw * 1e-6, depletion_mw * 1e-3
        emission = self._emission(self._r2_grid_m2, exc_w, dep_w)
        bleach = self._bleach_rate(self._r2_grid_m2, exc_w, dep_w)
        profile = self._emission(self._r2_fine_m2, max(exc_w, 1e-9), dep_w)
        for array in (emission, bleach):
            array.setflags(write=False)
        return Kernels(emission, bleach, _profile_fwhm_nm(profile, 0.25))

    def kernels(self, excitation_uw: float, depletion_mw: float) -> Kernels:
        """Kernels for these powers (cached; powers rounded to 1e-6 relative)."""
        return self._cached(_round(excitation_uw), _round(depletion_mw))

    def effective_fwhm_nm(self, depletion_mw: float, excitation_uw: float = 5.0) -> float:
        return self.kernels(excitation_uw, depletion_mw).fwhm_nm


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _profile_fwhm_nm(profile: np.ndarray, step_nm: float) -> float:
    """Full width at half maximum of a radial profile sampled from r = 0 in ``step_nm`` steps."""
    peak = float(profile.max())
    if peak <= 0:
        return float("nan")
    start = int(np.argmax(profile))
    below = np.nonzero(profile[start:] < 0.5 * peak)[0]
    if below.size == 0:
        return float("nan")
    i = start + int(below[0])
    y0, y1 = profile[i - 1], profile[i]
    r_half = (i - 1 + (y0 - 0.5 * peak) / (y0 - y1)) * step_nm
    return float(2.0 * r_half)
