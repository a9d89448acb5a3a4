"""A contract check a driver author runs in their own tests: ``check_driver``.

    from stedloop.testing import check_driver

    def test_the_driver_keeps_the_stedloop_contract():
        check_driver(lambda caps: AcmeDriver(AcmeOptions(...), caps))

It builds the driver the way stedloop does (``cls(options, caps)``, here through your
factory), connects it and checks each rule of docs/plugins.md that can be checked without
knowing the instrument: the class loads, ``describe`` is well formed, a frame has the right
shape, dtype and range and can cross to a worker process, the caps it was built with are
enforced, a value outside ``parameter_ranges`` is refused with ``ParameterRejected``, a region
outside the sample with ``RegionError``, raw output goes where the request says, and
``request_abort``, ``safe_state`` and ``close`` behave. The first broken rule fails with an
``AssertionError`` that names it. Use a fake of your vendor library, or the real instrument
with a sample you may bleach.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stedloop import registry
from stedloop.driver import AcquireRequest, Driver, DriverDescription, RawOutput
from stedloop.errors import ParameterRejected, RegionError, SafetyCapExceeded
from stedloop.frame import IMAGE_NAMES, Frame, Region
from stedloop.params import PARAM_NAMES, ImagingParams, SafetyCaps

#: Where the test frame is taken unless ``params`` says otherwise (moved into the driver's
#: ranges): a moderate STED setting inside the default caps.
DEFAULT_TEST_POINT = ImagingParams(dwell_time_us=10.0, excitation_uw=5.0, depletion_mw=50.0)

#: Frames are stored as uint16 photon counts (tiffio.py).
MAX_COUNT = 65535.0

DriverFactory = Callable[[SafetyCaps], Driver]


def check_driver(
    make_driver: DriverFactory,
    *,
    params: ImagingParams | None = None,
    caps: SafetyCaps | None = None,
) -> DriverDescription:
    """Check the driver ``make_driver(caps)`` builds against the stedloop driver contract.

    ``params``: the point of the test frames (default: ``DEFAULT_TEST_POINT`` moved into the
    driver's ``parameter_ranges``); ``caps``: the caps to build it with (default
    ``SafetyCaps()``). Returns the driver's description; raises ``AssertionError`` naming
    the first rule it breaks."""
    caps = caps if caps is not None else SafetyCaps()
    driver = make_driver(caps)
    label = f"driver {type(driver).__name__}"
    registry.validate(registry.DRIVERS, type(driver), label)
    _require(isinstance(driver, Driver), f"{label} does not implement the Driver protocol")
    with driver:
        description = driver.describe()
        _check_description(description, label)
        point = params if params is not None else _test_point(description)
        _require(
            caps.allows(point),
            f"the test point {point.describe()} is beyond the caps; pass params=",
        )
        width, height = description.field_of_view_px
        tiles = _Tiles(width, height, description.pixel_size_nm)
        with tempfile.TemporaryDirectory(prefix="stedloop-check-") as raw_dir:
            raw = RawOutput(Path(raw_dir) / "frames", "0000")
            request = AcquireRequest(point, tiles.take(), raw)
            frame = driver.acquire(request)
            _check_frame(frame, request, description, caps, label)
            raw_files = sorted(p.name for p in raw.folder.glob("*")) if raw.folder.is_dir() else []
            _require(
                all(name.startswith("0000") for name in raw_files),
                f"{label} saved raw files not named by the request's stem: {raw_files}",
            )
        _check_refusals(driver, description, point, tiles, label)
        driver.request_abort()  # idle: must return at once and not spoil the next frame
        again = driver.acquire(AcquireRequest(point, tiles.take()))
        _require(isinstance(again, Frame), f"{label}: no frame after an idle request_abort()")
        driver.safe_state()
        driver.safe_state()  # twice in a row: must not raise
    driver.close()  # a second close (after the with block's) must do nothing
    _check_caps_enforced(make_driver, point, description, label)
    return description


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _check_description(description: DriverDescription, label: str) -> None:
    _require(
        isinstance(description, DriverDescription),
        f"{label}.describe() returned {type(description).__name__}, not a DriverDescription",
    )
    _require(
        isinstance(description.pixel_size_nm, (int, float)) and description.pixel_size_nm > 0,
        f"{label}: pixel_size_nm must be a positive number of nm, got "
        f"{description.pixel_size_nm!r}",
    )
    fov = description.field_of_view_px
    _require(
        len(fov) == 2 and all(isinstance(n, int) and n > 0 for n in fov),
        f"{label}: field_of_view_px must be (width, height) in whole pixels, got {fov!r}",
    )
    extent = description.sample_extent_um
    if extent is not None:
        field_um = (
            fov[0] * description.pixel_size_nm / 1000,
            fov[1] * description.pixel_size_nm / 1000,
        )
        _require(
            len(extent) == 2 and extent[0] >= field_um[0] and extent[1] >= field_um[1],
            f"{label}: sample_extent_um {extent!r} (width, height in µm from the origin) must "
            f"hold at least one field of {field_um[0]:g} x {field_um[1]:g} µm, or be None",
        )
    for name, bounds in description.parameter_ranges.items():
        _require(
            name in PARAM_NAMES,
            f"{label}: parameter_ranges names {name!r}; expected some of {', '.join(PARAM_NAMES)}",
        )
        low, high = bounds
        _require(
            math.isfinite(low) and math.isfinite(high) and 0 <= low <= high,
            f"{label}: parameter_ranges[{name!r}] = {bounds!r} is not (min, max) with 0 <= min <= max",
        )


def _test_point(description: DriverDescription) -> ImagingParams:
    values = DEFAULT_TEST_POINT.as_dict()
    for name, (low, high) in description.parameter_ranges.items():
        values[name] = min(max(values[name], low), high)
    return ImagingParams.from_mapping(values)


class _Tiles:
    """Fresh regions from the origin, one field apart (a region is never imaged twice)."""

    def __init__(self, width_px: int, height_px: int, pixel_size_nm: float) -> None:
        self.width_px, self.height_px = width_px, height_px
        self.step_um = width_px * pixel_size_nm / 1000
        self.next = 0

    def take(self) -> Region:
        self.next += 1
        return Region(round((self.next - 1) * self.step_um, 9), 0.0, self.width_px, self.height_px)


def _check_frame(
    frame: Frame,
    request: AcquireRequest,
    description: DriverDescription,
    caps: SafetyCaps,
    label: str,
) -> None:
    _require(
        isinstance(frame, Frame), f"{label}.acquire returned {type(frame).__name__}, not a Frame"
    )
    expected = (request.region.height_px, request.region.width_px)
    for name in IMAGE_NAMES:
        image = getattr(frame, name)
        _require(
            image.shape == expected,
            f"{label}: frame image {name} is {image.shape} (rows, columns); the region asks for "
            f"{expected}",
        )
        _require(
            image.dtype.kind in "uif",
            f"{label}: frame image {name} has dtype {image.dtype}; use photon counts as an "
            "unsigned integer or float array",
        )
        _require(
            bool(np.isfinite(image).all()) and float(image.min()) >= 0,
            f"{label}: frame image {name} holds negative, NaN or infinite values; images are "
            "photon counts (>= 0)",
        )
        _require(
            float(image.max()) <= MAX_COUNT and bool(np.array_equal(image, np.round(image))),
            f"{label}: frame image {name} holds counts that are not whole numbers in "
            f"0..{MAX_COUNT:g}; a session stores frames as 16-bit counts and refuses others",
        )
    _require(frame.region == request.region, f"{label}: frame.region is not the requested region")
    _require(
        math.isclose(frame.pixel_size_nm, description.pixel_size_nm, rel_tol=1e-6),
        f"{label}: frame.pixel_size_nm {frame.pixel_size_nm:g} differs from describe()'s "
        f"{description.pixel_size_nm:g}",
    )
    _require(
        frame.started_at_s <= frame.finished_at_s,
        f"{label}: started_at_s is after finished_at_s (seconds since the epoch)",
    )
    _require(
        caps.allows(frame.params),
        f"{label}: the applied values it reports, {frame.params.describe()}, exceed the caps",
    )
    from stedloop.worker.protocol import encode_frame

    try:
        encode_frame(frame)  # what a worker process does with every frame
    except Exception as exc:
        raise AssertionError(
            f"{label}: the frame cannot cross to a worker process: {exc}; frame.metadata "
            "values must be JSON values or numeric numpy arrays"
        ) from None


def _check_refusals(
    driver: Driver,
    description: DriverDescription,
    point: ImagingParams,
    tiles: _Tiles,
    label: str,
) -> None:
    lows = {name: low for name, (low, _high) in description.parameter_ranges.items()}
    for name, (_low, high) in description.parameter_ranges.items():
        beyond = dataclasses.replace(point, **{**lows, name: high * 1.1 + 1.0})
        if not SafetyCaps().allows(beyond) or not _driver_caps_allow(driver, beyond):
            continue  # the caps refuse it first: the driver's own range is not reached
        try:
            driver.acquire(AcquireRequest(beyond, tiles.take()))
        except ParameterRejected:
            continue
        except Exception as exc:
            raise AssertionError(
                f"{label}: {name}={getattr(beyond, name):g} lies outside its parameter_ranges "
                f"and raised {type(exc).__name__}; raise ParameterRejected for a value the "
                "instrument cannot set (the session then does not retry it)"
            ) from None
        raise AssertionError(
            f"{label}: {name}={getattr(beyond, name):g} lies outside its parameter_ranges but "
            "was acquired; refuse it with ParameterRejected"
        )
    width, height = description.field_of_view_px
    wrong_size = Region(0.0, 0.0, width + 1, height)
    extent = description.sample_extent_um
    outside = [wrong_size] + ([Region(extent[0], 0.0, width, height)] if extent else [])
    for region in outside:
        try:
            driver.acquire(AcquireRequest(point, region))
        except RegionError:
            continue
        except Exception as exc:
            raise AssertionError(
                f"{label}: a region it cannot image ({region}) raised {type(exc).__name__}; "
                "raise RegionError"
            ) from None
        raise AssertionError(f"{label}: a region it cannot image ({region}) was acquired")


def _driver_caps_allow(driver: Driver, params: ImagingParams) -> bool:
    caps = getattr(driver, "caps", None)
    return not isinstance(caps, SafetyCaps) or caps.allows(params)


def _check_caps_enforced(
    make_driver: DriverFactory, point: ImagingParams, description: DriverDescription, label: str
) -> None:
    """A driver built with tighter caps refuses the test point: it uses the caps it is given."""
    if point.excitation_uw <= 0:
        return
    tight = SafetyCaps(max_excitation_uw=point.excitation_uw / 2)
    driver = make_driver(tight)
    width, height = description.field_of_view_px
    with driver:
        try:
            driver.acquire(AcquireRequest(point, Region(0.0, 0.0, width, height)))
        except SafetyCapExceeded:
            return
        except Exception as exc:
            raise AssertionError(
                f"{label}: built with max_excitation_uw={tight.max_excitation_uw:g}, it raised "
                f"{type(exc).__name__} for excitation_uw={point.excitation_uw:g}; expected "
                "SafetyCapExceeded (check the caps it is built with before every set)"
            ) from None
    raise AssertionError(
        f"{label}: built with max_excitation_uw={tight.max_excitation_uw:g}, it acquired at "
        f"excitation_uw={point.excitation_uw:g}; it must check the caps it is built with"
    )
