"""stedloop_toy: a complete driver plugin, written against stedloop.plugin_api only.

``ToyController`` stands in for the vendor library of a real microscope: it keeps laser
settings in volts and returns photon counts of a bead sample. Replace it with your
library; keep the rest.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from stedloop.plugin_api import (
    AcquireRequest,
    AcquisitionAborted,
    BaseDriver,
    DriverDescription,
    DriverDisconnected,
    Frame,
    ImagingParams,
    ParameterRejected,
    SafetyCaps,
)

log = logging.getLogger("stedloop_toy")

#: What the hardware can be set to, in stedloop units (the site's caps may be tighter).
RANGES = {"dwell_time_us": (1.0, 200.0), "excitation_uw": (0.0, 30.0), "depletion_mw": (0.0, 400.0)}


class ToyOptions(BaseModel):
    """The ``[drivers.toy]`` table. Units in every name; no default for a calibration."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    depletion_mw_per_volt: float = Field(gt=0, description="Calibration: mW at the sample per V.")
    excitation_uw_per_volt: float = Field(gt=0, description="Calibration: µW at the sample per V.")
    pixel_size_nm: float = Field(20.0, gt=0, description="Pixel size, nm.")
    field_px: int = Field(224, ge=8, description="Field edge, pixels.")
    sample_fields: int = Field(4, ge=1, description="The slide is sample_fields² fields.")


class ToyController:
    """Stand-in for a vendor library: volts in, photon counts out."""

    def __init__(self, field_px: int, seed: int = 0) -> None:
        self.volts = {"excitation": 0.0, "depletion": 0.0}
        self.dwell_us = 10.0
        self._field_px = field_px
        self._rng = np.random.default_rng(seed)

    def set_volts(self, line: str, volts: float) -> None:
        self.volts[line] = round(volts, 3)  # a 1 mV DAC: the applied value is rounded

    def scan(self, sted: bool) -> np.ndarray:
        n = self._field_px
        beads = np.zeros((n, n))
        beads[self._rng.integers(0, n, 40), self._rng.integers(0, n, 40)] = 1.0
        width_px = 1.0 if sted else 3.0
        kernel = np.exp(-0.5 * (np.arange(-8, 9) / width_px) ** 2)
        blurred = np.apply_along_axis(np.convolve, 0, beads, kernel, mode="same")
        blurred = np.apply_along_axis(np.convolve, 1, blurred, kernel, mode="same")
        expected = 1.0 + 50.0 * blurred * self.volts["excitation"] * self.dwell_us / 10.0
        return self._rng.poisson(expected).astype(np.float32)

    def stop(self) -> None:
        self.volts = {"excitation": 0.0, "depletion": 0.0}


class ToyDriver(BaseDriver):
    """Registered as ``toy`` in the ``stedloop.drivers`` entry-point group."""

    API_VERSION: ClassVar[str] = "2.0"  # the plugin API this was written for, literally
    Options: ClassVar[type[BaseModel]] = ToyOptions
    options: ToyOptions

    def __init__(self, options: ToyOptions, caps: SafetyCaps) -> None:
        # stedloop builds every driver as cls(options, caps): the parsed [drivers.toy] table
        # and the site's [safety] caps.
        super().__init__(options, caps)  # sets self.options, self.caps, the abort flag
        self._scope: ToyController | None = None
        self._lock = threading.Lock()  # safe_state may come from a stop while idle

    # -- connection ---------------------------------------------------------------------------
    def connect(self) -> None:
        try:
            self._scope = ToyController(self.options.field_px)
        except OSError as exc:
            raise DriverDisconnected(f"cannot reach the toy controller ({exc})") from None
        self.safe_state()

    def describe(self) -> DriverDescription:
        o = self.options
        extent_um = o.sample_fields * o.field_px * o.pixel_size_nm / 1000
        return DriverDescription(
            name="toy",
            pixel_size_nm=o.pixel_size_nm,
            field_of_view_px=(o.field_px, o.field_px),
            sample_extent_um=(extent_um, extent_um),  # None for a stage without bounds
            parameter_ranges=dict(RANGES),
        )

    # -- one frame ----------------------------------------------------------------------------
    def _acquire(self, request: AcquireRequest) -> Frame:
        # BaseDriver.acquire checked the caps and the region before calling this.
        params = request.params
        for name, (low, high) in RANGES.items():
            value = getattr(params, name)
            if not low <= value <= high:  # a value the hardware cannot set: refused, no retry
                raise ParameterRejected(
                    f"{name}={value:g} is outside the toy's range {low:g}..{high:g}"
                )
        scope = self._connected()
        started = time.time()
        try:
            images, applied = self._scan_three(scope, params)
        except BaseException:
            self.safe_state()  # any failure: lasers off first, then report it
            raise
        if request.raw_output is not None:  # raw data beside the session's frame, if any
            request.raw_output.folder.mkdir(parents=True, exist_ok=True)
            raw = request.raw_output.folder / f"{request.raw_output.stem}.toy.json"
            raw.write_text(json.dumps({"volts": scope.volts, "dwell_us": scope.dwell_us}))
        return Frame(
            confocal_before=images[0],
            sted=images[1],
            confocal_after=images[2],
            params=applied,  # what the instrument applied, read back: not what was asked
            region=request.region,
            pixel_size_nm=self.options.pixel_size_nm,
            started_at_s=started,
            finished_at_s=time.time(),
            metadata={"volts": dict(scope.volts)},  # JSON values (or numpy arrays) only
        )

    def _scan_three(
        self, scope: ToyController, params: ImagingParams
    ) -> tuple[list[np.ndarray], ImagingParams]:
        images = []
        for sted in (False, True, False):
            if self.abort_requested:  # request_abort() came from another thread
                raise AcquisitionAborted("aborted between images")
            self._set(
                scope,
                params if sted else ImagingParams(params.dwell_time_us, params.excitation_uw, 0.0),
            )
            images.append(scope.scan(sted))
            if sted:
                applied = self._read_back(scope)
        self._set(scope, ImagingParams(params.dwell_time_us, 0.0, 0.0))
        return images, applied

    def _set(self, scope: ToyController, params: ImagingParams) -> None:
        o = self.options
        volts_exc = params.excitation_uw / o.excitation_uw_per_volt
        volts_dep = params.depletion_mw / o.depletion_mw_per_volt
        # The values about to be sent, converted back to stedloop units, against the caps:
        self.check_sent(
            ImagingParams(
                params.dwell_time_us,
                round(volts_exc, 3) * o.excitation_uw_per_volt,
                round(volts_dep, 3) * o.depletion_mw_per_volt,
            ),
            "about to be sent to the toy controller",
        )
        scope.dwell_us = params.dwell_time_us
        scope.set_volts("excitation", volts_exc)
        scope.set_volts("depletion", volts_dep)

    def _read_back(self, scope: ToyController) -> ImagingParams:
        o = self.options
        return ImagingParams(
            scope.dwell_us,
            scope.volts["excitation"] * o.excitation_uw_per_volt,
            scope.volts["depletion"] * o.depletion_mw_per_volt,
        )

    def _connected(self) -> ToyController:
        if self._scope is None:
            raise DriverDisconnected("the toy driver is not connected; call connect() first")
        return self._scope

    # -- safety -------------------------------------------------------------------------------
    def safe_state(self) -> None:
        """Lasers to zero, scan stopped. Never raises: it runs on every error path."""
        with self._lock:
            if self._scope is not None:
                try:
                    self._scope.stop()
                except Exception as exc:  # report it, never raise it
                    log.error("toy safe_state failed: %s", exc)

    def close(self) -> None:
        self.safe_state()
        self._scope = None  # idempotent: a second close does nothing
