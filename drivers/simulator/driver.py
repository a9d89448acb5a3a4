"""The simulator backend: a physically grounded STED microscope over a synthetic sample.

One ``acquire`` images a region confocal-before → STED → confocal-after. Each image is the
mean-field expectation (fluorophore map correlated with the emission kernel, by FFT) plus
background, drawn as Poisson counts; after each image the fluorophores of the region and its
neighbourhood under the beams are bleached binomially, so the sample remembers its history.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.fft
import scipy.signal
from pydantic import BaseModel, ConfigDict, Field

from stedloop.driver import (
    OVERVIEW_ABILITY,
    AcquireRequest,
    BaseDriver,
    DriverDescription,
    OverviewRequest,
)
from stedloop.drivers.simulator import physics
from stedloop.drivers.simulator.structures import generate, patchy_coverage
from stedloop.errors import (
    AcquisitionAborted,
    DriverDisconnected,
    DriverError,
    ParameterRejected,
    RegionError,
)
from stedloop.frame import Frame, Overview, Region
from stedloop.params import PARAM_NAMES, PARAM_UNITS, ImagingParams, SafetyCaps

#: What the simulated hardware can be set to (the safety caps may be tighter).
HARDWARE_RANGES: dict[str, tuple[float, float]] = {
    "dwell_time_us": (0.1, 1000.0),
    "excitation_uw": (0.0, 100.0),
    "depletion_mw": (0.0, 500.0),
}


class SimulatorOptions(BaseModel):
    """``[drivers.simulator]``: the sample, the detector, and fault injection for tests."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    structure: Literal["actin", "tubulin", "puncta", "beads"] = Field(
        "actin", description="Ground-truth structure of the sample."
    )
    seed: int = Field(0, description="Seed of the sample and of the photon noise.")
    sample_fields: int = Field(
        8, ge=1, le=32, description="The sample is sample_fields x sample_fields fields."
    )
    pixel_size_nm: float = Field(20.0, gt=1.0, le=200.0, description="Pixel size, nm.")
    field_px: int = Field(224, ge=16, le=2048, description="Field edge, pixels.")
    include_ground_truth: bool = Field(
        False, description="Put the fluorophore map before each frame in frame.metadata."
    )
    label_density: float = Field(
        1.0, gt=0, le=100, description="Scale of the labelling density (brightness)."
    )
    detection_efficiency: float = Field(
        physics.Detector.detection_efficiency, gt=0, le=1, description="Collection x detector."
    )
    background_counts_per_s_per_uw: float = Field(
        physics.Detector.background_counts_per_s_per_uw,
        ge=0,
        description="Out-of-focus light, counts/s per µW of excitation.",
    )
    dark_counts_per_s: float = Field(
        physics.Detector.dark_counts_per_s, ge=0, description="Detector dark counts, 1/s."
    )
    empty_area_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of the sample area that holds no label (patches, as on a real "
        "coverslip); 0: structure everywhere.",
    )
    sparse_area_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of the sample area that keeps only a tenth of its labels.",
    )
    patch_size_um: float = Field(
        8.0, gt=0, le=1000, description="Size of the empty and sparse patches, µm."
    )
    photobleaching_scale: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Dye photostability: factor on both bleaching rates (1: the STAR635-like "
        "default; 3: a dye that bleaches three times faster).",
    )
    # -- overviews ------------------------------------------------------------------------------
    overviews: bool = Field(
        True, description="Offer the overview ability (a confocal scan of a larger area)."
    )
    # -- fault injection (tests of the worker, daemon and session) ---------------------------
    acquire_delay_s: float = Field(
        0.0, ge=0, description="Sleep inside acquire (abortable via request_abort)."
    )
    realtime: bool = Field(False, description="Also sleep for the physical scan time.")
    hang_on_frame: int | None = Field(
        None, ge=0, description="Block forever (ignoring aborts) on this acquire call (0-based)."
    )
    crash_on_frame: int | None = Field(
        None, ge=0, description="Kill the process (os._exit(3)) on this acquire call."
    )
    fail_on_frame: int | None = Field(
        None, ge=0, description="Raise DriverError on this acquire call."
    )


class SimulatorDriver(BaseDriver):
    """Default backend: simulated STED on a seeded sample larger than one field."""

    Options: ClassVar[type[BaseModel]] = SimulatorOptions
    NAME: ClassVar[str] = "simulator"
    #: Kernel radius and margin around a field, pixels (covers PSFs and bleaching reach).
    RADIUS_PX: ClassVar[int] = 20

    def __init__(self, options: BaseModel | None = None, caps: SafetyCaps | None = None) -> None:
        super().__init__(options, caps)
        opts: SimulatorOptions = self.options  # type: ignore[assignment]
        self.opts = opts
        self.beam = physics.BeamModel(
            opts.pixel_size_nm,
            self.RADIUS_PX,
            dye=physics.Dye().with_bleaching_scale(opts.photobleaching_scale),
            detector=physics.Detector(
                opts.detection_efficiency,
                opts.background_counts_per_s_per_uw,
                opts.dark_counts_per_s,
            ),
        )
        self._sample: np.ndarray | None = None  # padded fluorophore map, int32
        self._initial_total = 0
        self._remaining_total = 0
        self._prepared_cache: dict[int, tuple[physics.Kernels, np.ndarray, np.ndarray]] = {}
        self._rng = np.random.default_rng([opts.seed, 1])
        self._frames = 0
        self._lock = threading.Lock()
        self.laser_levels: dict[str, float] = {"excitation_uw": 0.0, "depletion_mw": 0.0}
        n, r = opts.field_px, self.RADIUS_PX
        window = n + 2 * r
        # Box-sum matrices: dose(q) = Σ_j K[j] · scanned(q − j + R), separable in y and x.
        q = np.arange(window)[:, None]
        j = np.arange(2 * r + 1)[None, :]
        beam = q - j + r
        self._scan_matrix = ((beam >= r) & (beam < r + n)).astype(np.float64)
        # The scanned kernel offsets of window position q form one run j in [lo, hi]: the
        # box sums are differences of prefix sums (cheaper than the matrix products).
        qs = np.arange(window)
        self._run_lo = np.clip(qs - n + 1, 0, 2 * r + 1)
        self._run_hi = np.clip(qs + 1, 0, 2 * r + 1)
        self._window = window

    # -- protocol -----------------------------------------------------------------------------
    def connect(self) -> None:
        """Generate the sample (seeded). Idempotent: reconnecting keeps the bleaching history."""
        if self._sample is None:
            opts = self.opts
            size = opts.sample_fields * opts.field_px + 2 * self.RADIUS_PX
            self._sample = patchy_coverage(
                generate(opts.structure, size, opts.pixel_size_nm, opts.seed, opts.label_density),
                opts.seed,
                opts.pixel_size_nm,
                opts.empty_area_fraction,
                opts.sparse_area_fraction,
                opts.patch_size_um,
            )
            self._initial_total = int(self._sample.sum())
            self._remaining_total = self._initial_total
        self._connected = True

    def describe(self) -> DriverDescription:
        opts = self.opts
        edge_um = opts.sample_fields * opts.field_px * opts.pixel_size_nm / 1000
        return DriverDescription(
            name=self.NAME,
            pixel_size_nm=opts.pixel_size_nm,
            field_of_view_px=(opts.field_px, opts.field_px),
            sample_extent_um=(edge_um, edge_um),
            parameter_ranges=dict(HARDWARE_RANGES),
            details={
                "structure": opts.structure,
                "seed": opts.seed,
                "sample_fields": opts.sample_fields,
                "saturation_intensity_w_m2": self.beam.saturation_intensity_w_m2,
                "saturation_power_mw": physics.saturation_power_mw(),
                "confocal_fwhm_nm": physics.Optics().confocal_fwhm_m * 1e9,
                "units": dict(PARAM_UNITS),
            },
            abilities=(OVERVIEW_ABILITY,) if opts.overviews else (),
        )

    def safe_state(self) -> None:
        self.laser_levels = {"excitation_uw": 0.0, "depletion_mw": 0.0}

    def close(self) -> None:
        self.safe_state()
        self._connected = False

    # -- acquisition --------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return getattr(self, "_connected", False)

    @property
    def frames_acquired(self) -> int:
        """Acquire calls that passed the checks (the index used by fault injection)."""
        return self._frames

    def fluorophore_map(self, region: Region | None = None) -> np.ndarray:
        """A copy of the current fluorophore counts of ``region`` (whole sample if None)."""
        sample = self._require_sample()
        r = self.RADIUS_PX
        if region is None:
            whole: np.ndarray = sample[r:-r, r:-r].copy()
            return whole
        y0, x0 = self._origin_px(region)
        part: np.ndarray = sample[
            y0 + r : y0 + r + region.height_px, x0 + r : x0 + r + region.width_px
        ].copy()
        return part

    def _require_sample(self) -> np.ndarray:
        if not self.connected or self._sample is None:
            raise DriverDisconnected("simulator is not connected; call connect() first")
        return self._sample

    def _origin_px(self, region: Region) -> tuple[int, int]:
        scale = 1000.0 / self.opts.pixel_size_nm
        x0, y0 = round(region.x_um * scale), round(region.y_um * scale)
        limit = self.opts.sample_fields * self.opts.field_px
        if x0 < 0 or y0 < 0 or x0 + region.width_px > limit or y0 + region.height_px > limit:
            raise RegionError(
                f"region at ({region.x_um:g}, {region.y_um:g}) µm lies outside the sample"
            )
        return y0, x0

    def _acquire(self, request: AcquireRequest) -> Frame:
        params, region = request.params, request.region
        sample = self._require_sample()
        for name in PARAM_NAMES:
            low, high = HARDWARE_RANGES[name]
            value = getattr(params, name)
            if not low <= value <= high:
                raise ParameterRejected(
                    f"{name}={value:g} {PARAM_UNITS[name]} is outside the simulator's range "
                    f"{low:g}..{high:g}"
                )
        y0, x0 = self._origin_px(region)
        with self._lock:
            index = self._frames
            self._frames += 1
        self._inject_faults(index, params, region)

        started = time.time()
        self.laser_levels = {
            "excitation_uw": params.excitation_uw,
            "depletion_mw": params.depletion_mw,
        }
        r, n = self.RADIUS_PX, self.opts.field_px
        window = sample[y0 : y0 + n + 2 * r, x0 : x0 + n + 2 * r]  # a view: bleaching writes back
        interior = (slice(r, r + n), slice(r, r + n))
        before = window[interior].astype(np.float32)
        total_before = float(before.sum())
        ground_truth = before if self.opts.include_ground_truth else None

        confocal = self.beam.kernels(params.excitation_uw, 0.0)
        sted = self.beam.kernels(params.excitation_uw, params.depletion_mw)
        dwell_s = params.dwell_time_us * 1e-6
        # Mean field: each image sees the expected map left by the scans before it; the
        # surviving fluorophores are drawn once, binomially, with the product of the three
        # survivals (exactly the law of three successive binomial thinnings).
        survival_confocal = self._survival(confocal, dwell_s)
        survival_sted = self._survival(sted, dwell_s)
        expected_map = window.astype(np.float32)
        images = []
        remaining = [total_before]
        for kernels, survival in (
            (confocal, survival_confocal),
            (sted, survival_sted),
            (confocal, survival_confocal),
        ):
            images.append(self._image(expected_map, kernels, dwell_s, params.excitation_uw))
            expected_map *= survival
            remaining.append(float(expected_map[interior].sum()))
        self._thin(window, survival_confocal * survival_sted * survival_confocal)
        total_after = float(window[interior].sum())
        sted_survival = remaining[2] / remaining[1] if remaining[1] > 0 else 1.0
        finished = time.time()

        metadata: dict[str, Any] = {
            "structure": self.opts.structure,
            "seed": self.opts.seed,
            "frame_index": index,
            "region_px": [int(x0), int(y0)],
            "effective_fwhm_nm": round(sted.fwhm_nm, 3),
            "confocal_fwhm_nm": round(confocal.fwhm_nm, 3),
            "surviving_fraction": total_after / total_before if total_before > 0 else 1.0,
            "sted_surviving_fraction": sted_survival,
            "mean_fluorophores_per_px": total_before / (n * n),
            "sample_remaining_fraction": self._remaining_total / max(self._initial_total, 1),
        }
        if ground_truth is not None:
            metadata["ground_truth"] = ground_truth
        return Frame(
            confocal_before=images[0],
            sted=images[1],
            confocal_after=images[2],
            params=params,
            region=region,
            pixel_size_nm=self.opts.pixel_size_nm,
            started_at_s=started,
            finished_at_s=finished,
            metadata=metadata,
        )

    def acquire_overview(self, request: OverviewRequest) -> Overview:
        """A confocal scan of ``request``'s area with coarse pixels (a whole multiple of the
        sample's): the expected image sampled at each pixel centre, Poisson noise, and the
        bleaching of that scan (dose spread over the coarser grid)."""
        self.check_overview(request)
        if not self.opts.overviews:
            raise DriverError("this simulator is configured without overviews")
        sample = self._require_sample()
        params = request.params
        low, high = HARDWARE_RANGES["dwell_time_us"]
        if not low <= params.dwell_time_us <= high or params.excitation_uw > 100.0:
            raise ParameterRejected(f"overview settings {params.describe()} outside the simulator")
        pixel_nm = self.opts.pixel_size_nm
        step = round(request.pixel_size_nm / pixel_nm)
        if step < 1 or abs(step * pixel_nm - request.pixel_size_nm) > 1e-6 * pixel_nm:
            raise ParameterRejected(
                f"overview pixel size {request.pixel_size_nm:g} nm is not a whole multiple of "
                f"the simulator's {pixel_nm:g} nm"
            )
        rows, columns = request.shape_px
        scale = 1000.0 / pixel_nm
        x0, y0 = round(request.x_um * scale), round(request.y_um * scale)
        limit = self.opts.sample_fields * self.opts.field_px
        height, width = min(rows * step, limit - y0), min(columns * step, limit - x0)
        rows, columns = height // step, width // step
        if rows < 1 or columns < 1:
            raise RegionError(f"overview at ({request.x_um:g}, {request.y_um:g}) µm is empty")
        started = time.time()
        self.laser_levels = {"excitation_uw": params.excitation_uw, "depletion_mw": 0.0}
        r = self.RADIUS_PX
        window = sample[y0 : y0 + height + 2 * r, x0 : x0 + width + 2 * r]
        kernels = self.beam.kernels(params.excitation_uw, 0.0)
        # Correlation with the emission kernel (flip + convolution), at every sample pixel.
        expected = scipy.signal.fftconvolve(
            window.astype(np.float32), kernels.emission_per_s[::-1, ::-1], mode="valid"
        )
        centre = step // 2
        expected = expected[centre::step, centre::step][:rows, :columns]
        dwell_s = params.dwell_time_us * 1e-6
        detector = self.beam.detector
        background = (
            detector.background_counts_per_s_per_uw * params.excitation_uw
            + detector.dark_counts_per_s
        ) * dwell_s
        mean = np.maximum(expected * dwell_s + background, 0.0)
        image = self._rng.poisson(mean).astype(np.uint16)
        # Bleaching: each fluorophore under the area sees the beam at one grid point in
        # step² of the fine raster, so its dose is the full-raster dose over step².
        interior = window[r : r + height, r : r + width]
        survival = np.float32(np.exp(-dwell_s * float(kernels.bleach_rate_per_s.sum()) / step**2))
        self._thin(interior, np.full(interior.shape, survival, np.float32))
        self.safe_state()
        return Overview(
            image=image,
            x_um=x0 / scale,
            y_um=y0 / scale,
            pixel_size_nm=step * pixel_nm,
            params=params,
            started_at_s=started,
            finished_at_s=time.time(),
            metadata={"structure": self.opts.structure, "surviving_fraction": float(survival)},
        )

    def _image(
        self,
        expected_map: np.ndarray,
        kernels: physics.Kernels,
        dwell_s: float,
        excitation_uw: float,
    ) -> np.ndarray:
        """Poisson counts of one raster scan (mean field: map ⋆ kernel, by FFT)."""
        n = self.opts.field_px
        spectrum = scipy.fft.rfft2(expected_map)
        spectrum *= self._prepared(kernels)[0]
        expected = scipy.fft.irfft2(spectrum, s=expected_map.shape)[:n, :n]
        detector = self.beam.detector
        background = (
            detector.background_counts_per_s_per_uw * excitation_uw + detector.dark_counts_per_s
        ) * dwell_s
        expected *= dwell_s
        expected += background
        np.maximum(expected, 0.0, out=expected)  # FFT round-off can dip below zero
        counts: np.ndarray = self._rng.poisson(expected).astype(np.uint16)
        return counts

    def _prepared(self, kernels: physics.Kernels) -> tuple[np.ndarray, np.ndarray]:
        """(kernel spectrum, bleaching dose per second of dwell) for these kernels, cached."""
        key = id(kernels)
        entry = self._prepared_cache.get(key)
        if entry is None or entry[0] is not kernels:
            padded = np.zeros((self._window, self._window), np.float32)
            k = kernels.emission_per_s
            padded[: k.shape[0], : k.shape[1]] = k
            # conj: correlation, so that the image at a pixel sums the kernel around it.
            spectrum = np.conj(scipy.fft.rfft2(padded))
            # Σ over the scanned beam positions of the bleaching rate, per fluorophore.
            dose = self._box_sum(kernels.bleach_rate_per_s).astype(np.float32)
            entry = (kernels, spectrum, dose)
            self._prepared_cache[key] = entry
            if len(self._prepared_cache) > 64:
                self._prepared_cache.pop(next(iter(self._prepared_cache)))
        return entry[1], entry[2]

    def _box_sum(self, kernel: np.ndarray) -> np.ndarray:
        """``scan @ kernel @ scan.T`` by prefix sums: the kernel summed over scanned beams."""
        lo, hi = self._run_lo, self._run_hi
        rows = np.concatenate([np.zeros((1, kernel.shape[1])), np.cumsum(kernel, axis=0)])
        partial = rows[hi] - rows[lo]  # (window, 2r+1): sum over the scanned rows
        cols = np.concatenate([np.zeros((partial.shape[0], 1)), np.cumsum(partial, axis=1)], 1)
        summed: np.ndarray = cols[:, hi] - cols[:, lo]
        return summed

    def _survival(self, kernels: physics.Kernels, dwell_s: float) -> np.ndarray:
        """Probability that a fluorophore of the window survives one raster scan."""
        dose = self._prepared(kernels)[1]
        survival: np.ndarray = np.exp(np.float32(-dwell_s) * dose)
        return survival

    def _thin(self, window: np.ndarray, survival: np.ndarray) -> None:
        """Bleach: each fluorophore survives with ``survival`` of its pixel (in place)."""
        nonzero = np.nonzero(window)
        counts = window[nonzero]
        # Drawing the losses is cheaper than the survivors when few are lost.
        lost = self._rng.binomial(counts, 1.0 - survival[nonzero].astype(np.float64))
        window[nonzero] = counts - lost
        self._remaining_total -= int(lost.sum())

    # -- faults -------------------------------------------------------------------------------
    def _inject_faults(self, index: int, params: ImagingParams, region: Region) -> None:
        opts = self.opts
        if opts.crash_on_frame is not None and index == opts.crash_on_frame:
            os._exit(3)  # the process dies, as a crashing vendor library would take it down
        if opts.hang_on_frame is not None and index == opts.hang_on_frame:
            while True:  # a hung instrument: ignores aborts; only a watchdog can end this
                time.sleep(3600)
        if opts.fail_on_frame is not None and index == opts.fail_on_frame:
            raise DriverError(f"simulated driver failure on acquire call {index}")
        delay_s = opts.acquire_delay_s
        if opts.realtime:
            pixels = region.width_px * region.height_px
            delay_s += 3 * pixels * params.dwell_time_us * 1e-6
        if delay_s > 0 and self._abort.wait(delay_s):
            raise AcquisitionAborted(f"acquisition {index} aborted on request")
