"""The one interface every microscope backend implements.

A backend is a class registered in the entry-point group ``stedloop.drivers``. The loop only
ever sees the ``Driver`` protocol; ``BaseDriver`` is an optional helper that makes the safety
checks impossible to forget: its ``acquire`` checks the caps and the region, then calls the
backend's ``_acquire``.

Everything one frame needs travels in its ``AcquireRequest`` (parameters, region, where raw
data goes), so the request crosses a process boundary whole: the worker (stedloop.worker)
forwards every method of the protocol and nothing is found by ``getattr``.

Optional abilities: a backend that can take a fast confocal overview of a larger area also
implements ``OverviewDriver.acquire_overview`` and lists ``OVERVIEW_ABILITY`` in its
description's ``abilities``; the worker forwards that method too (and answers "not able" for
a backend without it). A session picks its regions from overviews only when both hold
(``takes_overviews``); every other backend keeps the tiling.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict

from stedloop import PLUGIN_API_VERSION
from stedloop.errors import RegionError, SafetyCapExceeded
from stedloop.frame import Frame, Overview, Region
from stedloop.params import ImagingParams, SafetyCaps

#: ``DriverDescription.abilities`` entry of a backend that implements ``OverviewDriver``.
OVERVIEW_ABILITY = "overview"


@dataclass(frozen=True)
class DriverDescription:
    """What a backend can do, as ``describe()`` reports it."""

    name: str
    pixel_size_nm: float
    field_of_view_px: tuple[int, int]  # (width, height) of one frame
    #: Sample area the backend can reach, (width, height) in µm from the origin;
    #: None when unbounded or unknown (a real stage).
    sample_extent_um: tuple[float, float] | None
    #: Settable range of each imaging parameter in stedloop units: name -> (min, max).
    parameter_ranges: dict[str, tuple[float, float]]
    details: dict[str, Any] = field(default_factory=dict)
    #: Optional abilities beyond the protocol, e.g. ``OVERVIEW_ABILITY``.
    abilities: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pixel_size_nm": self.pixel_size_nm,
            "field_of_view_px": list(self.field_of_view_px),
            "sample_extent_um": list(self.sample_extent_um) if self.sample_extent_um else None,
            "parameter_ranges": {k: list(v) for k, v in self.parameter_ranges.items()},
            "details": self.details,
            "abilities": list(self.abilities),
        }


@dataclass(frozen=True)
class RawOutput:
    """Where a backend that saves raw instrument data (Imspector's .obf) puts one frame's:
    files ``<folder>/<stem>.<image name>.<ext>``. Backends without raw data ignore it."""

    folder: Path
    stem: str  # e.g. "0007", the session's frame number


@dataclass(frozen=True)
class AcquireRequest:
    """Everything one frame needs: what to set, where to image, where raw data goes."""

    params: ImagingParams
    region: Region
    #: None: the backend's own default (e.g. ``raw_output_dir`` in its options, or nothing).
    raw_output: RawOutput | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the worker sends requests as JSON)."""
        raw = self.raw_output
        return {
            "params": self.params.as_dict(),
            "region": self.region.as_dict(),
            "raw_output": {"folder": str(raw.folder), "stem": raw.stem} if raw else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AcquireRequest:
        """Inverse of ``as_dict``; KeyError/TypeError/ValueError or a StedloopError if malformed."""
        raw = data.get("raw_output")
        return cls(
            ImagingParams.from_mapping(data["params"]),
            Region.from_dict(data["region"]),
            RawOutput(Path(str(raw["folder"])), str(raw["stem"])) if raw else None,
        )


@dataclass(frozen=True)
class OverviewRequest:
    """A confocal overview: the area (top-left corner and size, µm), its pixel size, and the
    settings of the scan. Depletion stays off; the dose per pixel counts against the same
    safety caps as a frame's (``params``)."""

    x_um: float
    y_um: float
    width_um: float
    height_um: float
    pixel_size_nm: float
    dwell_time_us: float
    excitation_uw: float

    @property
    def params(self) -> ImagingParams:
        """The scan's settings as imaging parameters (depletion 0), for the caps."""
        return ImagingParams(self.dwell_time_us, self.excitation_uw, 0.0)

    @property
    def shape_px(self) -> tuple[int, int]:
        """(rows, columns) of the overview image."""
        scale = 1000.0 / self.pixel_size_nm
        return max(1, round(self.height_um * scale)), max(1, round(self.width_um * scale))

    def as_dict(self) -> dict[str, float]:
        return {
            "x_um": self.x_um,
            "y_um": self.y_um,
            "width_um": self.width_um,
            "height_um": self.height_um,
            "pixel_size_nm": self.pixel_size_nm,
            "dwell_time_us": self.dwell_time_us,
            "excitation_uw": self.excitation_uw,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OverviewRequest:
        """Inverse of ``as_dict``; KeyError/TypeError/ValueError if malformed."""
        return cls(**{k: float(data[k]) for k in cls.__dataclass_fields__})


@runtime_checkable
class Driver(Protocol):
    """A microscope backend. Usable as a context manager (connect ... safe_state + close).

    Threads: ``connect``, ``describe``, ``acquire``, ``safe_state`` and ``close`` are called
    one at a time from one thread (the session's, or the worker's driver thread);
    ``request_abort`` comes from another thread while ``acquire`` runs, and must return at
    once. The worker forwards every method here; a backend needs no other method."""

    def connect(self) -> None:
        """Open the connection. Raises ``DriverDisconnected`` with what to check."""

    def describe(self) -> DriverDescription:
        """Name, parameter ranges, pixel size and field of view."""

    def acquire(self, request: AcquireRequest) -> Frame:
        """Image ``request.region`` confocal-before, STED, confocal-after with
        ``request.params``; save raw data to ``request.raw_output`` if the backend has any.

        Checks the safety caps right before applying anything; refuses (never clips) with
        ``ParameterRejected`` (``SafetyCapExceeded`` for a cap). The frame's ``params`` are
        the values the instrument reports as applied."""

    def request_abort(self) -> None:
        """Ask the ``acquire`` in flight to stop soon (raising ``AcquisitionAborted``).
        Called from another thread; returns at once; does nothing when idle."""

    def safe_state(self) -> None:
        """Put every laser to zero and stop any measurement. Must not raise if avoidable."""

    def close(self) -> None:
        """Release the connection. Idempotent."""

    def __enter__(self) -> Driver: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class OverviewDriver(Protocol):
    """The optional overview ability (see the module's docstring)."""

    def acquire_overview(self, request: OverviewRequest) -> Overview:
        """Scan ``request``'s area confocally (depletion off) and return the image.

        Checks the safety caps (the dose per pixel of ``request.params``) right before
        anything is applied and refuses (never clips) with ``SafetyCapExceeded``; an area
        outside the sample is refused with ``RegionError``. Puts the lasers back to zero."""


def takes_overviews(driver: object, description: DriverDescription) -> bool:
    """Whether ``driver`` can take overviews: it says so, and it has the method."""
    return OVERVIEW_ABILITY in description.abilities and isinstance(driver, OverviewDriver)


class NoOptions(BaseModel):
    """Options model for a backend that takes none."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


_SelfDriver = TypeVar("_SelfDriver", bound="SafeStateContext")


class SafeStateContext:
    """``with driver:`` connects and goes safe on entry, goes safe and closes on exit, also
    when the block raises. Mixed into every stedloop driver class.

    The three placeholders are marked abstract (this is no ABC, so nothing changes at
    instantiation) so that the plugin check at load refuses a class that relies on them."""

    @abstractmethod
    def connect(self) -> None:
        raise NotImplementedError

    @abstractmethod
    def safe_state(self) -> None:
        raise NotImplementedError

    @abstractmethod
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _SelfDriver) -> _SelfDriver:
        self.connect()
        self.safe_state()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.safe_state()
        finally:
            self.close()


class BaseDriver(SafeStateContext, ABC):
    """Helper base class: caps and region checks, abort flag, context management.

    Subclasses set ``Options`` (a pydantic model for their ``[drivers.<name>]`` config
    section) and implement ``connect``, ``describe``, ``_acquire``, ``safe_state``, ``close``.
    """

    API_VERSION: ClassVar[str] = PLUGIN_API_VERSION
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel | None = None, caps: SafetyCaps | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self.caps = caps if caps is not None else SafetyCaps()
        self._abort = threading.Event()

    # -- the protocol -----------------------------------------------------------------------
    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def describe(self) -> DriverDescription: ...

    def acquire(self, request: AcquireRequest) -> Frame:
        self.caps.check(request.params)  # the request, before anything reaches the instrument
        self.check_region(request.region)
        self._abort.clear()
        frame = self._acquire(request)
        # What the backend reports as applied (read back) must be within the caps as well.
        self.check_sent(frame.params, "applied, as the driver reports")
        return frame

    def check_sent(self, sent: ImagingParams, what: str = "about to be sent") -> None:
        """Refuse values beyond the caps, stated in stedloop units, with ``what`` they are.

        Backends that convert units call this right before each set with the value they
        are about to send converted *back* to stedloop units: a conversion whose two
        directions disagree, or rounding past a cap, is caught before the laser sees it."""
        problems = self.caps.violations(sent)
        if problems:
            raise SafetyCapExceeded(f"{what}: {sent.describe()}: " + "; ".join(problems))

    def check_overview(self, request: OverviewRequest) -> None:
        """What every ``acquire_overview`` checks first: the caps (refused, never clipped)
        and that the area lies on the sample."""
        problems = self.caps.violations(request.params)
        if problems:
            raise SafetyCapExceeded("overview refused: " + "; ".join(problems))
        if request.width_um <= 0 or request.height_um <= 0 or request.pixel_size_nm <= 0:
            raise RegionError(
                f"overview of {request.width_um:g}x{request.height_um:g} µm at "
                f"{request.pixel_size_nm:g} nm pixels: sizes must be positive"
            )
        extent = self.describe().sample_extent_um
        tolerance_um = 1e-9
        if extent is not None and (
            request.x_um < -tolerance_um
            or request.y_um < -tolerance_um
            or request.x_um + request.width_um > extent[0] + tolerance_um
            or request.y_um + request.height_um > extent[1] + tolerance_um
        ):
            raise RegionError(
                f"overview at ({request.x_um:g}, {request.y_um:g}) µm of "
                f"{request.width_um:g}x{request.height_um:g} µm lies outside the sample "
                f"(0..{extent[0]:g}, 0..{extent[1]:g}) µm"
            )

    @abstractmethod
    def _acquire(self, request: AcquireRequest) -> Frame:
        """The backend's acquisition; caps and region are checked already. Check
        ``abort_requested`` between steps and raise ``AcquisitionAborted`` when it is set."""

    @abstractmethod
    def safe_state(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    # -- shared helpers ---------------------------------------------------------------------
    def request_abort(self) -> None:
        """Ask the acquisition in flight to stop at its next check point (thread-safe)."""
        self._abort.set()

    @property
    def abort_requested(self) -> bool:
        return self._abort.is_set()

    def check_region(self, region: Region) -> None:
        description = self.describe()
        width, height = description.field_of_view_px
        if (region.width_px, region.height_px) != (width, height):
            raise RegionError(
                f"region is {region.width_px}x{region.height_px} px but this backend images "
                f"{width}x{height} px fields"
            )
        extent = description.sample_extent_um
        if extent is None:
            return
        size_x_um = region.width_px * description.pixel_size_nm / 1000
        size_y_um = region.height_px * description.pixel_size_nm / 1000
        tolerance_um = 1e-9
        if (
            region.x_um < -tolerance_um
            or region.y_um < -tolerance_um
            or region.x_um + size_x_um > extent[0] + tolerance_um
            or region.y_um + size_y_um > extent[1] + tolerance_um
        ):
            raise RegionError(
                f"region at ({region.x_um:g}, {region.y_um:g}) µm of "
                f"{size_x_um:g}x{size_y_um:g} µm lies outside the sample "
                f"(0..{extent[0]:g}, 0..{extent[1]:g}) µm"
            )
