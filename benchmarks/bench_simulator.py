"""Benchmark: median time of one 224x224 simulator acquire (three images + bleaching), one core.

Run: python benchmarks/bench_simulator.py [--frames 200]
Prints the conditions and the median / p90 time per acquire for fixed parameters (kernels
cached, as when re-imaging) and for new parameters on every frame (kernels recomputed, as in
an optimisation session). If the optional package ``pysted`` (pySTED, FLClab) is importable,
the same script builds a pySTED microscope from the simulator's constants, images the same
ground-truth fluorophore map with the same parameters (confocal → STED → confocal, bleaching
on) and prints the speed ratio and the agreement of the mean counts. pySTED is not a
dependency: ``pip install --no-deps pysted==0.0.4 tqdm scikit-image`` adds it.
"""

from __future__ import annotations

import os

# One core: set before numpy/scipy are imported so no BLAS/FFT thread pool starts wider.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from machine import cpu_name  # noqa: E402

from stedloop.driver import AcquireRequest  # noqa: E402
from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions, physics  # noqa: E402
from stedloop.frame import Region  # noqa: E402
from stedloop.params import ImagingParams  # noqa: E402


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned"


def _time_acquires(
    driver: SimulatorDriver, frames: int, vary: bool
) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (process) seconds per acquire.

    On a shared, loaded machine the wall time includes waiting for a core; the process CPU
    time of this single-threaded run is what one dedicated core would need."""
    rng = np.random.default_rng(0)
    fields = driver.opts.sample_fields
    field_um = driver.opts.field_px * driver.opts.pixel_size_nm / 1000
    wall, cpu = [], []
    for i in range(frames):
        if vary:
            params = ImagingParams(
                float(rng.uniform(5, 30)), float(rng.uniform(1, 15)), float(rng.uniform(0, 300))
            )
        else:
            params = ImagingParams(10.0, 5.0, 150.0)
        tile = i % (fields * fields)
        region = Region((tile % fields) * field_um, (tile // fields) * field_um, 224, 224)
        started, started_cpu = time.perf_counter(), time.process_time()
        driver.acquire(AcquireRequest(params, region))
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="Acquires per condition.")
    parser.add_argument("--structure", default="actin")
    parser.add_argument(
        "--pysted-frames",
        type=int,
        default=2,
        help="pySTED acquires (3 images each, seconds per image) when pysted is installed.",
    )
    args = parser.parse_args()

    pinning = _pin_one_core()
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        threads = "1 (env vars + threadpoolctl)"
    except ImportError:
        threads = "1 (env vars)"

    print("# stedloop simulator benchmark")
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"cpu: {cpu_name()} ({os.cpu_count()} logical cores on the machine), {pinning}")
    print(f"threads: {threads}")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"torch {_version('torch')}"
    )
    print(f"load average (1/5/15 min): {os.getloadavg() if hasattr(os, 'getloadavg') else 'n/a'}")

    driver = SimulatorDriver(SimulatorOptions(structure=args.structure, seed=0, sample_fields=8))
    started = time.perf_counter()
    driver.connect()
    print(
        f"sample: {args.structure}, 8x8 fields of 224x224 px at 20 nm, generated in "
        f"{time.perf_counter() - started:.2f} s"
    )
    _time_acquires(driver, 10, vary=False)  # warm-up (caches, page faults)
    for vary, label in (
        (False, "fixed params (10 µs, 5 µW, 150 mW)"),
        (True, "new params every frame"),
    ):
        wall, cpu = _time_acquires(driver, args.frames, vary)
        wall_ms, cpu_ms = [t * 1e3 for t in wall], [t * 1e3 for t in cpu]
        print(
            f"acquire 224x224, 3 images + bleaching, {label}: "
            f"median {statistics.median(wall_ms):.2f} ms wall (p90 {np.percentile(wall_ms, 90):.2f}), "
            f"median {statistics.median(cpu_ms):.2f} ms CPU (p90 {np.percentile(cpu_ms, 90):.2f}) "
            f"over {len(wall_ms)} frames (target <= 10 ms)"
        )

    if importlib.util.find_spec("pysted") is None:
        print("pysted: not installed; comparison with pySTED skipped")
    else:
        _compare_with_pysted(args.structure, args.pysted_frames)


# -- pySTED comparison (optional) ----------------------------------------------------------------
#: Comparison conditions: the benchmark's fixed parameters, on field (1, 1) of a 3x3 sample.
COMPARE_PARAMS = ImagingParams(dwell_time_us=10.0, excitation_uw=5.0, depletion_mw=150.0)


def _pysted_microscope(opts: SimulatorOptions, excitation_uw: float) -> Any:
    """A pySTED microscope with the simulator's constants (see physics.py).

    Mapping and the differences that remain:
    * wavelengths 635 / 750 / 690 nm, NA 1.4 (pySTED also needs the immersion index: 1.5),
      pinhole 0.7 Airy units, 40 MHz, depletion pulse 400 ps, objective transmission 1;
    * dye: σ_abs, σ_ste, lifetime, quantum yield, k1 and b as ours; k0 = 0 because pySTED's
      k0 multiplies the STED intensity, while ours is excitation-driven bleaching (pySTED has
      none); vibrational relaxation pySTED's default 1 ps (ours: instantaneous);
    * detector: pcef × pdef = our detection efficiency; detection ungated over the whole period
      (delay 0, width 1/f_rep), which makes pySTED's confocal η = 1 as ours; then pySTED's
      ``background × width × rate × dwell`` is our background per second × dwell;
    * no anti-Stokes excitation by the depletion beam (ours has none).
    Beams: pySTED uses vectorial (Xie 2013) spots and a Gaussian ⊗ pinhole detection PSF,
    ours Gaussian / Laguerre-Gauss spots and a Gaussian detection profile.
    """
    from pysted import base

    dye, optics = physics.Dye(), physics.Optics()
    exc_nm = round(optics.excitation_wavelength_m * 1e9)
    sted_nm = round(optics.depletion_wavelength_m * 1e9)
    emission_nm = round(optics.emission_wavelength_m * 1e9)
    period_s = 1 / optics.repetition_rate_hz
    excitation = base.GaussianBeam(optics.excitation_wavelength_m)
    sted = base.DonutBeam(
        optics.depletion_wavelength_m,
        tau=optics.depletion_pulse_s,
        rate=optics.repetition_rate_hz,
        zero_residual=0.0,
        anti_stoke=False,
    )
    detector = base.Detector(
        n_airy=optics.pinhole_airy_units,
        noise=True,
        background=opts.background_counts_per_s_per_uw * excitation_uw,
        darkcount=opts.dark_counts_per_s,
        pcef=opts.detection_efficiency,
        pdef=1.0,
        det_delay=0.0,
        det_width=period_s,
    )
    objective = base.Objective(
        na=optics.numerical_aperture,
        n=1.5,
        transmission={exc_nm: 1.0, sted_nm: 1.0, emission_nm: 1.0},
    )
    fluo = base.Fluorescence(
        optics.emission_wavelength_m,
        sigma_abs={exc_nm: dye.sigma_abs_m2},
        sigma_ste={sted_nm: dye.sigma_ste_m2},
        tau=dye.lifetime_s,
        qy=dye.quantum_yield,
        k0=0.0,
        k1=dye.k1_sted,
        b=dye.b_sted,
    )
    return base.Microscope(excitation, sted, detector, objective, fluo)


def _pysted_acquire(
    microscope: Any,
    padded_map: np.ndarray,
    pad_px: int,
    pixel_size_nm: float,
    params: ImagingParams,
    seed: int,
) -> list[np.ndarray]:
    """Confocal → STED → confocal with bleaching on a fresh copy of ``padded_map``."""
    from pysted import base

    pixel_m = pixel_size_nm * 1e-9
    datamap = base.Datamap(padded_map, pixel_m)
    interior = padded_map.shape[0] - 2 * pad_px
    laser = microscope.cache(pixel_m)[0]
    rows_cols = [pad_px, pad_px + interior - 1]
    datamap.set_roi(laser, intervals={"rows": rows_cols, "cols": rows_cols})
    images = []
    for i, depletion_mw in enumerate((0.0, params.depletion_mw, 0.0)):
        counts, _, _ = microscope.get_signal_and_bleach(
            datamap,
            pixel_m,
            params.dwell_time_us * 1e-6,
            params.excitation_uw * 1e-6,
            depletion_mw * 1e-3,
            bleach=True,
            update=True,
            seed=seed * 3 + i + 1,
        )
        images.append(np.asarray(counts, dtype=np.float64))
    return images


def _compare_with_pysted(structure: str, frames: int) -> None:
    """Time pySTED and ours on the same ground truth and parameters; compare mean counts."""
    params = COMPARE_PARAMS
    opts = SimulatorOptions(structure=structure, seed=0, sample_fields=3, include_ground_truth=True)
    microscope = _pysted_microscope(opts, params.excitation_uw)
    started = time.perf_counter()
    pad_px = microscope.cache(opts.pixel_size_nm * 1e-9)[0].shape[0] // 2
    setup_s = time.perf_counter() - started
    n, px_um = opts.field_px, opts.pixel_size_nm / 1000
    field_um = n * px_um
    region = Region(field_um, field_um, n, n)

    driver = SimulatorDriver(opts)
    driver.connect()
    # The map pySTED scans: the field plus a margin as wide as its beams' half-size, so
    # both simulators see the same emitters around the field edge.
    padded = driver.fluorophore_map(
        Region(field_um - pad_px * px_um, field_um - pad_px * px_um, n + 2 * pad_px, n + 2 * pad_px)
    )
    ours = driver.acquire(
        AcquireRequest(params, region)
    )  # first acquire of this region: same ground truth
    if not np.array_equal(ours.metadata["ground_truth"], padded[pad_px:-pad_px, pad_px:-pad_px]):
        raise RuntimeError("the map given to pySTED is not the simulator's ground truth")
    ours_means = [
        float(img.mean()) for img in (ours.confocal_before, ours.sted, ours.confocal_after)
    ]

    pysted_wall, pysted_cpu, pysted_means = [], [], []
    for k in range(frames):
        t0, c0 = time.perf_counter(), time.process_time()
        images = _pysted_acquire(microscope, padded, pad_px, opts.pixel_size_nm, params, seed=k)
        pysted_wall.append(time.perf_counter() - t0)
        pysted_cpu.append(time.process_time() - c0)
        pysted_means.append([float(img.mean()) for img in images])
    pysted_mean = np.mean(pysted_means, axis=0)

    # Ours on the same field and parameters (the region bleaches on; the cost does not change).
    our_wall, our_cpu = [], []
    for _ in range(50):
        t0, c0 = time.perf_counter(), time.process_time()
        driver.acquire(AcquireRequest(params, region))
        our_wall.append(time.perf_counter() - t0)
        our_cpu.append(time.process_time() - c0)

    print(
        f"pysted {_version('pysted')}: same ground truth ({structure}, field (1, 1) of seed 0, "
        f"{n}x{n} px at {opts.pixel_size_nm:g} nm, mean {padded[pad_px:-pad_px, pad_px:-pad_px].mean():.3f} "
        f"fluorophores/px, margin {pad_px} px), {params.dwell_time_us:g} µs, "
        f"{params.excitation_uw:g} µW, {params.depletion_mw:g} mW; confocal -> STED -> confocal, "
        f"bleaching on; pySTED beam/PSF cache built once in {setup_s:.1f} s (not timed)"
    )
    pysted_cpu_med, our_cpu_med = statistics.median(pysted_cpu), statistics.median(our_cpu)
    pysted_wall_med, our_wall_med = statistics.median(pysted_wall), statistics.median(our_wall)
    print(
        f"pysted acquire (3 images): median {pysted_cpu_med:.2f} s CPU, {pysted_wall_med:.2f} s wall "
        f"over {frames} acquires; ours: median {our_cpu_med * 1e3:.2f} ms CPU, "
        f"{our_wall_med * 1e3:.2f} ms wall over {len(our_cpu)} acquires"
    )
    print(
        f"speed ratio pySTED / ours: {pysted_cpu_med / our_cpu_med:.0f}x CPU, "
        f"{pysted_wall_med / our_wall_med:.0f}x wall (target >= 300x)"
    )
    for name, our_value, their_value in zip(
        ("confocal before", "STED", "confocal after"), ours_means, pysted_mean, strict=True
    ):
        print(
            f"mean counts {name}: ours {our_value:.3f}, pySTED {their_value:.3f}, "
            f"ours/pySTED - 1 = {our_value / their_value - 1:+.1%} (target within 5 %)"
        )
    our_ratio = ours_means[1] / ours_means[0]
    their_ratio = pysted_mean[1] / pysted_mean[0]
    print(
        f"STED / confocal-before mean counts: ours {our_ratio:.4f}, pySTED {their_ratio:.4f} "
        f"({our_ratio / their_ratio - 1:+.1%}); per-molecule brightness differs, see RESULTS.md"
    )


if __name__ == "__main__":
    main()
