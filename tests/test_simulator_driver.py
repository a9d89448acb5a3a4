"""SimulatorDriver: protocol, determinism, fresh regions, memory of bleaching, checks, faults."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stedloop.config.schema import StedloopConfig
from stedloop.driver import AcquireRequest, Driver
from stedloop.drivers import create_driver, parse_driver_options
from stedloop.drivers.simulator import STRUCTURES, SimulatorDriver, SimulatorOptions
from stedloop.errors import (
    AcquisitionAborted,
    ConfigError,
    DriverDisconnected,
    DriverError,
    ParameterRejected,
    RegionError,
    SafetyCapExceeded,
)
from stedloop.frame import Region
from stedloop.params import ImagingParams, SafetyCaps

FIELD = Region(0.0, 0.0, 224, 224)
TYPICAL = ImagingParams(dwell_time_us=10.0, excitation_uw=5.0, depletion_mw=150.0)


def make(**options: object) -> SimulatorDriver:
    driver = SimulatorDriver(SimulatorOptions(**{"sample_fields": 2, **options}))
    driver.connect()
    return driver


def test_is_a_driver_and_registered_as_entry_point() -> None:
    driver = create_driver(StedloopConfig(), sample_fields=2)
    assert isinstance(driver, SimulatorDriver)
    assert isinstance(driver, Driver)
    assert driver.caps == SafetyCaps()


def test_describe_reports_sample_extent_and_ranges() -> None:
    description = SimulatorDriver(SimulatorOptions(sample_fields=3)).describe()
    assert description.name == "simulator"
    assert description.field_of_view_px == (224, 224)
    assert description.sample_extent_um == pytest.approx((13.44, 13.44))
    assert set(description.parameter_ranges) == {"dwell_time_us", "excitation_uw", "depletion_mw"}
    assert description.details["saturation_intensity_w_m2"] == pytest.approx(2.52e11, rel=0.01)


def test_frame_contents_and_metadata_are_json_facts() -> None:
    frame = make().acquire(AcquireRequest(TYPICAL, FIELD))
    assert frame.shape == (224, 224)
    for image in (frame.confocal_before, frame.sted, frame.confocal_after):
        assert image.dtype == np.uint16
    assert frame.params == TYPICAL
    assert frame.region == FIELD
    assert frame.pixel_size_nm == 20.0
    assert frame.started_at_s <= frame.finished_at_s
    meta = frame.metadata
    for key in (
        "structure",
        "frame_index",
        "effective_fwhm_nm",
        "confocal_fwhm_nm",
        "surviving_fraction",
        "mean_fluorophores_per_px",
    ):
        assert key in meta
    assert "ground_truth" not in meta
    assert meta["structure"] == "actin" and meta["frame_index"] == 0
    assert 0 < meta["surviving_fraction"] < 1
    import json

    json.dumps(meta)  # every fact is JSON-serialisable


def test_ground_truth_is_the_map_before_the_frame() -> None:
    driver = make(include_ground_truth=True)
    before = driver.fluorophore_map(FIELD)
    frame = driver.acquire(AcquireRequest(TYPICAL, FIELD))
    truth = frame.metadata["ground_truth"]
    assert truth.dtype == np.float32 and truth.shape == (224, 224)
    np.testing.assert_array_equal(truth, before)
    assert frame.metadata["mean_fluorophores_per_px"] == pytest.approx(before.mean())


@pytest.mark.parametrize("structure", STRUCTURES)
def test_same_seed_same_frames(structure: str) -> None:
    a = make(structure=structure, seed=11).acquire(AcquireRequest(TYPICAL, FIELD))
    b = make(structure=structure, seed=11).acquire(AcquireRequest(TYPICAL, FIELD))
    np.testing.assert_array_equal(a.stack(), b.stack())
    c = make(structure=structure, seed=12).acquire(AcquireRequest(TYPICAL, FIELD))
    assert not np.array_equal(a.stack(), c.stack())


def test_fresh_regions_differ_and_reimaging_is_dimmer() -> None:
    driver = make(seed=7)
    first = driver.acquire(AcquireRequest(TYPICAL, FIELD))
    other = driver.acquire(AcquireRequest(TYPICAL, Region(4.48, 0.0, 224, 224)))
    assert not np.array_equal(first.confocal_before, other.confocal_before)
    again = driver.acquire(AcquireRequest(TYPICAL, FIELD))
    assert again.confocal_before.mean() < 0.9 * first.confocal_before.mean()
    assert again.metadata["mean_fluorophores_per_px"] < first.metadata["mean_fluorophores_per_px"]
    # Within one acquire the confocal-after is dimmer than the confocal-before.
    assert first.confocal_after.mean() < first.confocal_before.mean()
    assert [f.metadata["frame_index"] for f in (first, other, again)] == [0, 1, 2]


def test_neighbourhood_is_bleached_too() -> None:
    """Fluorophores just outside the field are bleached by the beam tails; far ones not."""
    driver = make(seed=8)
    neighbour = Region(4.48, 0.0, 224, 224)
    before = driver.fluorophore_map(neighbour)
    driver.acquire(AcquireRequest(ImagingParams(40.0, 10.0, 300.0), FIELD))
    after = driver.fluorophore_map(neighbour)
    assert after[:, :3].sum() < before[:, :3].sum()
    np.testing.assert_array_equal(after[:, 40:], before[:, 40:])


def test_safety_cap_refused_before_anything_happens() -> None:
    driver = SimulatorDriver(
        SimulatorOptions(sample_fields=1), caps=SafetyCaps(max_depletion_mw=100.0)
    )
    driver.connect()
    before = driver.fluorophore_map()
    with pytest.raises(SafetyCapExceeded, match="max_depletion_mw"):
        driver.acquire(AcquireRequest(ImagingParams(10.0, 5.0, 150.0), FIELD))
    with pytest.raises(SafetyCapExceeded, match="light dose"):
        driver.acquire(AcquireRequest(ImagingParams(300.0, 5.0, 99.0), FIELD))
    np.testing.assert_array_equal(driver.fluorophore_map(), before)  # nothing bleached
    assert driver.frames_acquired == 0
    assert driver.laser_levels == {"excitation_uw": 0.0, "depletion_mw": 0.0}


def test_value_beyond_simulated_hardware_is_rejected() -> None:
    driver = make()
    before = driver.fluorophore_map()
    with pytest.raises(ParameterRejected, match="dwell_time_us"):
        driver.acquire(AcquireRequest(ImagingParams(5000.0, 0.5, 0.0), FIELD))
    np.testing.assert_array_equal(driver.fluorophore_map(), before)


def test_nan_and_negative_parameters_are_refused() -> None:
    with pytest.raises(ParameterRejected):
        ImagingParams(float("nan"), 5.0, 10.0)
    with pytest.raises(ParameterRejected):
        ImagingParams(10.0, -1.0, 10.0)


@pytest.mark.parametrize(
    "region",
    [
        Region(-0.02, 0.0, 224, 224),
        Region(4.5, 0.0, 224, 224),
        Region(0.0, 8.97, 224, 224),
        Region(0.0, 0.0, 100, 224),
    ],
)
def test_region_outside_sample_is_refused(region: Region) -> None:
    driver = make()
    with pytest.raises(RegionError):
        driver.acquire(AcquireRequest(TYPICAL, region))
    assert driver.frames_acquired == 0


def test_acquire_needs_connect_and_close_disconnects() -> None:
    driver = SimulatorDriver(SimulatorOptions(sample_fields=1))
    with pytest.raises(DriverDisconnected):
        driver.acquire(AcquireRequest(TYPICAL, FIELD))
    driver.connect()
    driver.acquire(AcquireRequest(TYPICAL, FIELD))
    driver.close()
    driver.close()  # idempotent
    with pytest.raises(DriverDisconnected):
        driver.acquire(AcquireRequest(TYPICAL, FIELD))


def test_context_manager_ends_in_safe_state() -> None:
    with SimulatorDriver(SimulatorOptions(sample_fields=1)) as driver:
        driver.acquire(AcquireRequest(TYPICAL, FIELD))
        assert driver.laser_levels == {"excitation_uw": 5.0, "depletion_mw": 150.0}
    assert driver.laser_levels == {"excitation_uw": 0.0, "depletion_mw": 0.0}
    assert not driver.connected


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="drivers.simulator.colour"):
        parse_driver_options(SimulatorDriver, "simulator", {"colour": "red"})
    with pytest.raises(ConfigError, match="structure"):
        parse_driver_options(SimulatorDriver, "simulator", {"structure": "mitochondria"})


def test_fail_on_frame_raises_once() -> None:
    driver = make(fail_on_frame=1)
    driver.acquire(AcquireRequest(TYPICAL, FIELD))
    with pytest.raises(DriverError, match="simulated driver failure"):
        driver.acquire(AcquireRequest(TYPICAL, FIELD))
    driver.acquire(AcquireRequest(TYPICAL, FIELD))  # a retry succeeds


def test_delay_is_abortable() -> None:
    driver = make(acquire_delay_s=30.0)
    threading.Timer(0.2, driver.request_abort).start()
    started = time.monotonic()
    with pytest.raises(AcquisitionAborted):
        driver.acquire(AcquireRequest(TYPICAL, FIELD))
    assert time.monotonic() - started < 5.0


def test_realtime_sleeps_for_the_scan_time() -> None:
    driver = make(realtime=True)
    started = time.monotonic()
    driver.acquire(AcquireRequest(ImagingParams(1.0, 5.0, 0.0), FIELD))
    assert time.monotonic() - started >= 3 * 224 * 224 * 1e-6


def _child(code: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.Popen([sys.executable, str(script)])


CHILD_PRELUDE = """
    import threading
    from stedloop.driver import AcquireRequest
    from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions
    from stedloop.frame import Region
    from stedloop.params import ImagingParams
    p = ImagingParams(10.0, 5.0, 100.0)
    r = Region(0.0, 0.0, 224, 224)
"""


def test_crash_on_frame_kills_the_process(tmp_path: Path) -> None:
    child = _child(
        CHILD_PRELUDE
        + """
    d = SimulatorDriver(SimulatorOptions(sample_fields=1, crash_on_frame=1)); d.connect()
    d.acquire(AcquireRequest(p, r))
    d.acquire(AcquireRequest(p, r))
    print("survived")
    """,
        tmp_path,
    )
    assert child.wait(timeout=60) == 3


def test_hang_on_frame_ignores_aborts(tmp_path: Path) -> None:
    flag = tmp_path / "before-hang"
    child = _child(
        CHILD_PRELUDE
        + f"""
    d = SimulatorDriver(SimulatorOptions(sample_fields=1, hang_on_frame=0)); d.connect()
    open({str(flag)!r}, "w").close()
    threading.Timer(0.2, d.request_abort).start()
    d.acquire(AcquireRequest(p, r))
    """,
        tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert flag.exists()
        time.sleep(1.0)
        assert child.poll() is None  # still blocked despite the abort request
    finally:
        child.kill()
        child.wait(timeout=10)
