"""Benchmark: median time of one 224x224 simulator acquire (three images + bleaching), one core.

Run: python benchmarks/bench_simulator.py [--frames 200]
Prints the conditions and the median / p90 time per acquire for fixed parameters (kernels
cached, as when re-imaging) and for new parameters on every frame (kernels recomputed, as in
an optimisation session). If the optional package ``pysted`` is importable, it would be
timed on the same ground truth; it is not a dependency, and its absence is reported.
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

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions  # noqa: E402

from stedloop.frame import Region  # noqa: E402
from stedloop.params import ImagingParams  # noqa: E402


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
        driver.acquire(params, region)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="Acquires per condition.")
    parser.add_argument("--structure", default="actin")
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
    print(f"cpu: {_cpu_name()} ({os.cpu_count()} logical cores on the machine), {pinning}")
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
    else:  # pragma: no cover - optional
        print("pysted: installed, but this benchmark has no pySTED adapter yet; comparison skipped")


if __name__ == "__main__":
    main()
