"""BaseDriver: caps and region are checked before a backend's _acquire sees anything."""

from __future__ import annotations

import time

import numpy as np
import pytest

from stedloop.driver import AcquireRequest, BaseDriver, Driver, DriverDescription
from stedloop.errors import RegionError, SafetyCapExceeded
from stedloop.frame import Frame, Region
from stedloop.params import ImagingParams, SafetyCaps


class RecordingDriver(BaseDriver):
    """A minimal backend that records what reached it."""

    def __init__(self, caps: SafetyCaps) -> None:
        super().__init__(caps=caps)
        self.applied: list[ImagingParams] = []
        self.calls: list[str] = []

    def connect(self) -> None:
        self.calls.append("connect")

    def describe(self) -> DriverDescription:
        return DriverDescription(
            name="recording",
            pixel_size_nm=20.0,
            field_of_view_px=(8, 8),
            sample_extent_um=(0.32, 0.32),
            parameter_ranges={},
        )

    def _acquire(self, request: AcquireRequest) -> Frame:
        params, region = request.params, request.region
        self.applied.append(params)
        image = np.ones((8, 8), dtype=np.uint16)
        now = time.time()
        return Frame(image, image, image, params, region, 20.0, now, now)

    def safe_state(self) -> None:
        self.calls.append("safe_state")

    def close(self) -> None:
        self.calls.append("close")


def test_base_driver_satisfies_the_protocol() -> None:
    assert isinstance(RecordingDriver(SafetyCaps()), Driver)


def test_capped_values_never_reach_the_backend() -> None:
    driver = RecordingDriver(SafetyCaps(max_depletion_mw=100))
    with pytest.raises(SafetyCapExceeded):
        driver.acquire(AcquireRequest(ImagingParams(10.0, 1.0, 150.0), Region(0, 0, 8, 8)))
    assert driver.applied == []


def test_region_checks() -> None:
    driver = RecordingDriver(SafetyCaps())
    params = ImagingParams(10.0, 1.0, 50.0)
    driver.acquire(AcquireRequest(params, Region(0.16, 0.16, 8, 8)))  # the last tile fits exactly
    with pytest.raises(RegionError, match="outside the sample"):
        driver.acquire(AcquireRequest(params, Region(0.2, 0.0, 8, 8)))
    with pytest.raises(RegionError, match="this backend images 8x8 px"):
        driver.acquire(AcquireRequest(params, Region(0, 0, 16, 16)))
    with pytest.raises(RegionError, match="positive integer"):
        Region(0, 0, 0, 8)


def test_context_manager_goes_safe_on_entry_and_exit_even_on_error() -> None:
    driver = RecordingDriver(SafetyCaps())
    with pytest.raises(RuntimeError), driver:
        raise RuntimeError("boom")
    assert driver.calls == ["connect", "safe_state", "safe_state", "close"]
