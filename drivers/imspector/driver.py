"""The Abberior Imspector driver: stedloop's imaging parameters on a real STED microscope.

One frame = three runs of one Imspector measurement: the confocal-before configuration, the
STED configuration and the confocal-after configuration (names from the options). Before
the runs every value is set in every configuration concerned, with the safety caps checked
right before each set, and read back; the frame records what Imspector applied.

Safety: ``safe_state`` sets both lasers to zero in every configuration and stops the
measurement. It runs at connect, on any error inside an acquisition, on stop and on close.
A lost connection raises ``DriverDisconnected``; the next ``acquire`` reconnects (with
back-off) before anything else, never in the middle of a frame. Only portable calls are
used: the acquisition PC is usually Windows.
"""

from __future__ import annotations

import glob
import importlib
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import structlog

from stedloop import PLUGIN_API_VERSION
from stedloop.driver import (
    OVERVIEW_ABILITY,
    AcquireRequest,
    BaseDriver,
    DriverDescription,
    OverviewRequest,
    RawOutput,
)
from stedloop.drivers.imspector.options import Calibration, ImspectorOptions
from stedloop.errors import (
    AcquisitionAborted,
    DriverDisconnected,
    DriverError,
    ParameterRejected,
    SafetyCapExceeded,
    StedloopError,
)
from stedloop.frame import Frame, Overview, Region
from stedloop.params import PARAM_UNITS, ImagingParams, SafetyCaps

log = structlog.get_logger("stedloop.drivers.imspector")

T = TypeVar("T")

#: Texts Imspector uses when it refuses a path or a value (not a connection problem).
PARAMETER_ERRORS = ("No parameter", "Invalid argument for parameter", "Unknown device or parameter")


def _connection_hint(host: str, port: int) -> str:
    return (
        f"check that Imspector is running on {host}, that its Python server is enabled "
        f"('Run Server' in Imspector), and that drivers.imspector.host/port ({host}:{port}) "
        "are right; a firewall may also block the port"
    )


class ImspectorDriver(BaseDriver):
    """Drives Imspector through specpy (or anything with specpy's surface, e.g. the fake)."""

    API_VERSION: ClassVar[str] = PLUGIN_API_VERSION
    Options: ClassVar[type[ImspectorOptions]] = ImspectorOptions
    options: ImspectorOptions

    def __init__(
        self,
        options: ImspectorOptions | None = None,
        caps: SafetyCaps | None = None,
        *,
        specpy_module: Any = None,
        wait: Callable[[float], None] | None = None,
    ) -> None:
        if options is None:
            raise DriverError(
                "the Imspector driver needs its [drivers.imspector] options (at least the "
                "laser calibration: excitation_uw_at_full_scale, depletion_mw_at_full_scale)"
            )
        super().__init__(options, caps)
        self._module = specpy_module
        self._paths = options.parameter_paths()
        self._calibration = Calibration(options)
        self._wait = wait
        self._app: Any = None
        self._measurement: Any = None
        self._lock = threading.RLock()
        self._counter = 0
        #: Folder for the raw measurement (.obf) of frames whose request names none;
        #: None = do not save them.
        self.raw_output_dir: Path | None = options.raw_output_dir
        #: Whether the last safe_state reached Imspector.
        self.last_safe_state_ok: bool | None = None

    # -- connection -------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._app is not None

    def _specpy(self) -> Any:
        if self._module is None:
            name = self.options.specpy_module
            try:
                self._module = importlib.import_module(name)
            except ImportError as exc:
                hint = (
                    "install it on the acquisition PC with: pip install 'stedloop[imspector]'"
                    if name == "specpy"
                    else "check drivers.imspector.specpy_module"
                )
                raise DriverError(f"cannot import {name!r} ({exc}); {hint}") from None
        return self._module

    def connect(self) -> None:
        """Connect to Imspector and put the lasers in the safe state."""
        with self._lock:
            self._open()
            self.safe_state()

    def _open(self) -> None:
        module = self._specpy()
        opts = self.options
        where = (opts.host, opts.effective_port)
        try:
            if opts.port is None:
                app = module.get_application(opts.host)
            else:
                app = module.get_application(opts.host, opts.port)
            version = app.version()
        except Exception as exc:
            self._forget()
            raise DriverDisconnected(
                f"cannot connect to Imspector at {where[0]}:{where[1]} ({exc}); "
                + _connection_hint(*where)
            ) from None
        try:
            if opts.measurement is None:
                measurement = app.active_measurement()
            else:
                measurement = app.measurement(opts.measurement)
            available = list(measurement.configuration_names())
        except Exception as exc:
            self._forget()
            which = "no measurement is active" if opts.measurement is None else "it is not open"
            raise DriverError(
                f"Imspector has no usable measurement ({exc}): {which}; open the measurement "
                "with the confocal and STED configurations in Imspector"
            ) from None
        missing = sorted(set(opts.all_configurations()) - set(available))
        if missing:
            self._forget()
            raise DriverError(
                f"measurement {measurement.name()!r} lacks configuration(s) "
                f"{', '.join(repr(m) for m in missing)}; it has {available}. Create them in "
                "Imspector or set drivers.imspector.*_configuration"
            )
        self._app, self._measurement = app, measurement
        self._version = version
        log.info("imspector_connected", host=opts.host, version=version)

    def _forget(self) -> None:
        self._app = None
        self._measurement = None

    def _ensure_connected(self) -> None:
        """Reconnect with back-off when the link was lost. Called between frames only."""
        if self.connected:
            return
        opts = self.options
        delay = opts.reconnect_backoff_s
        for attempt in range(opts.reconnect_attempts + 1):
            try:
                self._open()
            except DriverDisconnected:
                if attempt == opts.reconnect_attempts:
                    raise
                log.warning("imspector_reconnect_failed", attempt=attempt + 1, retry_in_s=delay)
                self._sleep(delay)
                delay = min(delay * 2, opts.reconnect_max_delay_s)
                continue
            self.safe_state()  # a fresh link starts from the safe state
            log.info("imspector_reconnected", attempts=attempt + 1)
            return

    def _sleep(self, seconds: float) -> None:
        if self._wait is not None:
            self._wait(seconds)
        elif self._abort.wait(seconds):  # an abort request ends the wait early
            raise AcquisitionAborted("aborted while waiting to reconnect to Imspector")

    # -- calls into specpy, with errors translated -------------------------------------------
    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except StedloopError:
            raise
        except Exception as exc:
            message = str(exc)
            if any(text in message for text in PARAMETER_ERRORS):
                raise DriverError(f"Imspector refused {what}: {message}") from None
            if self._alive():
                raise DriverError(f"Imspector failed {what}: {message}") from None
            self._forget()
            where = (self.options.host, self.options.effective_port)
            raise DriverDisconnected(
                f"lost the connection to Imspector while {what} ({message}); "
                + _connection_hint(*where)
                + "; the next frame reconnects"
            ) from None

    def _alive(self) -> bool:
        if self._app is None:
            return False
        try:
            self._app.version()
        except Exception:
            return False
        return True

    # -- description ------------------------------------------------------------------------
    def describe(self) -> DriverDescription:
        opts = self.options
        return DriverDescription(
            name="imspector",
            pixel_size_nm=opts.pixel_size_nm,
            field_of_view_px=(opts.field_px, opts.field_px),
            sample_extent_um=opts.sample_extent_um,
            parameter_ranges=self._ranges(),
            details={
                "host": opts.host,
                "port": opts.effective_port,
                "path_profile": opts.path_profile,
                "paths": self._paths.model_dump(),
                "configurations": opts.role_configurations(),
                "connected": self.connected,
                "imspector_version": getattr(self, "_version", None) if self.connected else None,
            },
            abilities=(OVERVIEW_ABILITY,) if opts.overview_configuration else (),
        )

    # -- acquisition ------------------------------------------------------------------------
    def _acquire(self, request: AcquireRequest) -> Frame:
        params, region = request.params, request.region
        with self._lock:
            self._check_ranges(params)
            self._ensure_connected()  # between frames: never reconnect mid-frame
            started = time.time()
            try:
                return self._acquire_connected(params, region, started, request.raw_output)
            except BaseException:
                self.safe_state()  # any failure: lasers off, measurement stopped
                raise

    def _check_ranges(self, params: ImagingParams) -> None:
        """Refuse, before anything is sent, a value this setup cannot set: the dwell range
        of the options, a power beyond the calibrated full scale (ParameterRejected: the
        same answer on any region, so a session does not retry it)."""
        for name, (low, high) in self._ranges().items():
            value = getattr(params, name)
            if not low <= value <= high:
                where = {
                    "dwell_time_us": "drivers.imspector.dwell_time_range_us",
                    "excitation_uw": "drivers.imspector.excitation_uw_at_full_scale",
                    "depletion_mw": "drivers.imspector.depletion_mw_at_full_scale",
                }[name]
                raise ParameterRejected(
                    f"{name}={value:g} {PARAM_UNITS[name]} is outside this Imspector setup's "
                    f"range {low:g}..{high:g} ({where})"
                )

    def _ranges(self) -> dict[str, tuple[float, float]]:
        """What this setup can set, in stedloop units (``describe().parameter_ranges``)."""
        full = self.options.power_full_scale
        low_us, high_us = self.options.dwell_time_range_us
        return {
            "dwell_time_us": (float(low_us), float(high_us)),
            "excitation_uw": (0.0, self._calibration.excitation_from_imspector(full)),
            "depletion_mw": (0.0, self._calibration.depletion_from_imspector(full)),
        }

    def _points(self, params: ImagingParams) -> dict[str, ImagingParams]:
        """Configuration name -> the point applied there (confocals: depletion off)."""
        opts = self.options
        confocal = ImagingParams(
            opts.confocal_dwell_time_us or params.dwell_time_us,
            params.excitation_uw
            if opts.confocal_excitation_uw is None
            else opts.confocal_excitation_uw,
            0.0,
        )
        points = {
            opts.confocal_before_configuration: confocal,
            opts.confocal_after_configuration: confocal,
        }
        points[opts.sted_configuration] = params  # STED wins if a name is shared
        return points

    def _acquire_connected(
        self, params: ImagingParams, region: Region, started: float, raw: RawOutput | None
    ) -> Frame:
        opts = self.options
        points = self._points(params)
        for name, point in points.items():  # every configuration's point, before the first set
            self.caps.check(point)
            self.check_sent(self._as_sent(point), f"to be sent to configuration {name!r}")
        applied: dict[str, dict[str, Any]] = {}
        for name, point in points.items():
            applied[name] = self._apply(name, point, region)
        images: dict[str, np.ndarray] = {}
        raw_files: list[str] = []
        target = self._raw_target(raw)
        for role, name in opts.role_configurations().items():
            if self.abort_requested:
                raise AcquisitionAborted(f"acquisition aborted before the {role} image")
            configuration = self._call(
                f"selecting configuration {name!r}", self._measurement.configuration, name
            )
            self._call(
                f"activating configuration {name!r}", self._measurement.activate, configuration
            )
            self._call(f"running configuration {name!r}", self._app.run, self._measurement)
            if self.abort_requested:
                raise AcquisitionAborted(f"acquisition aborted during the {role} image")
            images[role] = self._read_stack(configuration, name)
            if target is not None:
                raw_files.append(self._save_raw(*target, role))
        finished = time.time()
        sted_applied = applied[opts.sted_configuration]["params"]
        metadata = {
            "imspector": {
                "host": opts.host,
                "version": self._version,
                "measurement": self._call("reading the measurement name", self._measurement.name),
                "path_profile": opts.path_profile,
                "configurations": opts.role_configurations(),
                "requested": params.as_dict(),
                "applied": {
                    name: {"params": a["params"].as_dict(), "values": a["values"]}
                    for name, a in applied.items()
                },
            },
            "raw_files": raw_files,
        }
        return Frame(
            confocal_before=images["confocal_before"],
            sted=images["sted"],
            confocal_after=images["confocal_after"],
            params=sted_applied,
            region=region,
            pixel_size_nm=applied[opts.sted_configuration]["pixel_size_nm"],
            started_at_s=started,
            finished_at_s=finished,
            metadata=metadata,
        )

    def _apply(self, name: str, point: ImagingParams, region: Region) -> dict[str, Any]:
        """Set ``point`` and the geometry in configuration ``name``; read everything back."""
        opts = self.options
        configuration = self._call(
            f"selecting configuration {name!r}", self._measurement.configuration, name
        )
        size_um = opts.field_px * opts.pixel_size_nm / 1000
        area = (region.x_um, region.y_um, size_um, size_um)
        return self._set_and_read_back(
            configuration, name, point, self._settings(area, opts.pixel_size_nm, point)
        )

    def _settings(
        self,
        area_um: tuple[float, float, float, float],
        pixel_size_nm: float,
        point: ImagingParams,
    ) -> list[tuple[str, float]]:
        """Imspector path -> value (its units) for a scan of ``area_um`` (x, y, width, height
        in sample µm) with ``point``'s settings."""
        paths = self._paths
        cal = self._calibration
        x_um, y_um, width_um, height_um = area_um
        origin_x_um, origin_y_um = self.options.scan_origin_um
        return [
            (paths.pixel_size_x, pixel_size_nm * 1e-9),
            (paths.pixel_size_y, pixel_size_nm * 1e-9),
            (paths.length_x, width_um * 1e-6),
            (paths.length_y, height_um * 1e-6),
            (paths.offset_x, (origin_x_um + x_um + width_um / 2) * 1e-6),
            (paths.offset_y, (origin_y_um + y_um + height_um / 2) * 1e-6),
            (paths.dwell_time, cal.dwell_to_imspector(point.dwell_time_us)),
            (paths.excitation_power, cal.excitation_to_imspector(point.excitation_uw)),
            (paths.depletion_power, cal.depletion_to_imspector(point.depletion_mw)),
        ]

    def _set_and_read_back(
        self,
        configuration: Any,
        name: str,
        point: ImagingParams,
        settings: list[tuple[str, float]],
        field_px: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        sent = self._as_sent(point)
        for path, value in settings:
            # Right before every set, whatever the caller checked: the value in Imspector's
            # units, converted back (conversion and rounding checked, not the constants).
            self.check_sent(sent, f"to be sent to configuration {name!r}")
            self._call(
                f"setting {path} = {value:g} in configuration {name!r}",
                configuration.set_parameters,
                path,
                value,
            )
        return self._read_back(configuration, name, point, dict(settings), field_px)

    def _as_sent(self, point: ImagingParams) -> ImagingParams:
        """``point`` as it will reach Imspector, converted there and back to stedloop units."""
        cal = self._calibration
        return ImagingParams(
            cal.dwell_from_imspector(cal.dwell_to_imspector(point.dwell_time_us)),
            cal.excitation_from_imspector(cal.excitation_to_imspector(point.excitation_uw)),
            cal.depletion_from_imspector(cal.depletion_to_imspector(point.depletion_mw)),
        )

    def _read_back(
        self,
        configuration: Any,
        name: str,
        asked: ImagingParams,
        sent: dict[str, float],
        field_px: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """Read every value back; ``field_px`` (columns, rows) expected, default a frame's."""
        paths = self._paths
        cal = self._calibration
        values: dict[str, float] = {}
        for path in [*sent, paths.resolution_x, paths.resolution_y]:
            value = self._call(f"reading {path} in {name!r}", configuration.parameters, path)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise DriverError(f"Imspector returned {value!r} for {path} in {name!r}")
            values[path] = float(value)
        applied = ImagingParams(
            cal.dwell_from_imspector(values[paths.dwell_time]),
            cal.excitation_from_imspector(values[paths.excitation_power]),
            cal.depletion_from_imspector(values[paths.depletion_power]),
        )
        tolerance = self.options.readback_tolerance
        for path, asked_value in sent.items():
            got = values[path]
            if not math.isclose(got, asked_value, rel_tol=tolerance, abs_tol=1e-12):
                raise DriverError(
                    f"Imspector applied {path} = {got:g} in {name!r} but {asked_value:g} was "
                    f"asked (more than {tolerance:.0%} apart); check the path and the units"
                )
        field = (round(values[paths.resolution_x]), round(values[paths.resolution_y]))
        expected = field_px or (self.options.field_px, self.options.field_px)
        if field != expected:
            raise DriverError(
                f"Imspector set a {field[0]}x{field[1]} px field in {name!r}, not the "
                f"{expected[0]}x{expected[1]} px asked; check the pixel sizes and field sizes"
            )
        try:
            self.caps.check(applied)  # what Imspector rounded to must be safe too
        except SafetyCapExceeded as exc:
            raise SafetyCapExceeded(f"value read back from Imspector in {name!r}: {exc}") from None
        return {
            "params": applied,
            "values": values,
            "pixel_size_nm": values[paths.pixel_size_x] * 1e9,
        }

    def _read_stack(
        self, configuration: Any, name: str, shape: tuple[int, int] | None = None
    ) -> np.ndarray:
        """The configuration's 2-D image; ``shape`` (rows, columns), default a frame's."""
        which = self.options.stack
        stack = self._call(f"opening stack {which!r} of {name!r}", configuration.stack, which)
        label = self._call(f"reading stack {which!r} of {name!r}", stack.name)
        where = f"stack {label!r} of configuration {name!r}"
        sizes = [int(s) for s in self._call(f"reading the sizes of {where}", stack.sizes)]
        data: np.ndarray = np.array(
            self._call(f"reading the data of {where}", stack.data), copy=True
        )
        if data.shape != tuple(reversed(sizes)):
            raise DriverError(
                f"{where}: data shape {data.shape} does not match Imspector's sizes {sizes} "
                "(expected their reverse)"
            )
        if data.dtype.kind not in "uif":
            raise DriverError(f"{where}: unusable data type {data.dtype} (expected numbers)")
        if data.ndim < 2 or any(n != 1 for n in data.shape[:-2]):
            raise DriverError(
                f"{where}: expected one 2-D image (sizes x, y, 1, 1), got sizes {sizes}; "
                "set the configuration to an xy scan without z or time steps"
            )
        image: np.ndarray = data.reshape(data.shape[-2:])
        expected = shape or (self.options.field_px, self.options.field_px)
        if image.shape != expected:
            raise DriverError(f"{where}: image is {image.shape} px, expected {expected}")
        if data.dtype.kind == "f" and not np.isfinite(image).all():
            raise DriverError(f"{where}: image holds NaN or infinite values")
        return image

    # -- overviews (the optional ability) -----------------------------------------------------
    def acquire_overview(self, request: OverviewRequest) -> Overview:
        """A confocal scan of ``request``'s area in the overview configuration (depletion 0),
        caps checked before every set, values read back; lasers safe afterwards, always."""
        self.check_overview(request)
        name = self.options.overview_configuration
        if name is None:
            raise DriverError(
                "this Imspector setup takes no overviews: set "
                "drivers.imspector.overview_configuration to a configuration of the measurement"
            )
        point = request.params
        with self._lock:
            self._check_ranges(point)
            self._ensure_connected()
            self._abort.clear()
            started = time.time()
            try:
                return self._overview_connected(name, request, started)
            finally:
                self.safe_state()  # an overview leaves no laser on, whatever happened

    def _overview_connected(self, name: str, request: OverviewRequest, started: float) -> Overview:
        point = request.params
        self.check_sent(self._as_sent(point), f"overview to be sent to configuration {name!r}")
        rows, columns = request.shape_px
        configuration = self._call(
            f"selecting configuration {name!r}", self._measurement.configuration, name
        )
        area = (request.x_um, request.y_um, request.width_um, request.height_um)
        applied = self._set_and_read_back(
            configuration,
            name,
            point,
            self._settings(area, request.pixel_size_nm, point),
            field_px=(columns, rows),
        )
        if self.abort_requested:
            raise AcquisitionAborted("overview aborted before its scan")
        self._call(f"activating configuration {name!r}", self._measurement.activate, configuration)
        self._call(f"running configuration {name!r}", self._app.run, self._measurement)
        if self.abort_requested:
            raise AcquisitionAborted("overview aborted during its scan")
        image = self._read_stack(configuration, name, (rows, columns))
        return Overview(
            image=image,
            x_um=request.x_um,
            y_um=request.y_um,
            pixel_size_nm=applied["pixel_size_nm"],
            params=applied["params"],
            started_at_s=started,
            finished_at_s=time.time(),
            metadata={"imspector": {"configuration": name, "values": applied["values"]}},
        )

    def _raw_target(self, raw: RawOutput | None) -> tuple[Path, str] | None:
        """(folder, stem) for this frame's raw files: the request's, else the options'
        folder with a time-stamped name; None when neither asks for raw files."""
        self._counter += 1
        if raw is not None:
            folder, name = raw.folder, raw.stem
        elif self.raw_output_dir is not None:
            folder = self.raw_output_dir
            name = time.strftime("%Y%m%dT%H%M%S") + f"_{self._counter:04d}"
        else:
            return None
        # Raw files are write-once like frames: a retry or a redone frame gets its own stem.
        stem, attempt = name, 1
        while any(folder.glob(f"{glob.escape(stem)}.*.obf")):
            attempt += 1
            stem = f"{name}-{attempt}"
        return folder, stem

    def _save_raw(self, folder: Path, stem: str, role: str) -> str:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DriverError(f"cannot create the raw data folder {folder}: {exc}") from None
        path = folder / f"{stem}.{role}.obf"
        self._call(f"saving {path}", self._measurement.save_as, str(path))
        return str(path)

    # -- safety -----------------------------------------------------------------------------
    def safe_state(self) -> None:
        """Both lasers to zero in every configuration, measurement stopped. Never raises."""
        with self._lock:
            if self._app is None or self._measurement is None:
                self.last_safe_state_ok = False
                log.warning("imspector_safe_state_unreachable", host=self.options.host)
                return
            problems: list[str] = []
            self._stop_measurement(problems)
            for name in self.options.all_configurations():
                for path in self._paths.laser_paths():
                    try:
                        configuration = self._measurement.configuration(name)
                        configuration.set_parameters(path, 0.0)
                    except Exception as exc:
                        problems.append(f"{name}/{path}: {exc}")
            self.last_safe_state_ok = not problems
            if problems:
                log.error("imspector_safe_state_failed", problems=problems)
                if not self._alive():
                    self._forget()

    def _stop_measurement(self, problems: list[str]) -> None:
        # Current specpy has pause() where older builds had stop(); use what exists.
        stop = getattr(self._app, "stop", None) or getattr(self._app, "pause", None)
        if stop is None:
            return
        try:
            stop(self._measurement)
        except Exception as exc:
            problems.append(f"stopping the measurement: {exc}")

    def request_abort(self) -> None:
        """Abort at the next check point and stop the run in flight (thread-safe)."""
        super().request_abort()
        app, measurement = self._app, self._measurement
        if app is None or measurement is None:
            return
        stop = getattr(app, "stop", None) or getattr(app, "pause", None)
        try:
            if stop is not None:
                stop(measurement)
        except Exception as exc:  # the acquisition thread reports the real error
            log.warning("imspector_abort_stop_failed", error=str(exc))

    def close(self) -> None:
        """Safe state, then drop the connection. Idempotent."""
        with self._lock:
            if self._app is not None:
                self.safe_state()
            self._forget()
