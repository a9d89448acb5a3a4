"""The ``[drivers.imspector]`` settings and the unit conversion they calibrate.

stedloop speaks physical units at the sample (µs, µW, mW); Imspector speaks seconds and
calibrated laser values (usually % of full power). The calibration that links them is
site-specific, so it has no default: a lab measures the power at the sample at full scale
and writes it here. Nothing is guessed for a laser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stedloop.drivers.imspector.paths import ParameterPaths, resolve_paths

#: Where the connection goes when ``port`` is not set (specpy's own default).
SPECPY_DEFAULT_PORT = 12345


class ImspectorOptions(BaseModel):
    """Settings of the Imspector driver (``[drivers.imspector]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # -- connection -------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Host running Imspector (its Run Server on).")
    port: int | None = Field(
        None, ge=1, le=65535, description="Imspector server port; empty means specpy's default."
    )
    specpy_module: str = Field(
        "specpy",
        description="Module providing get_application(); the built-in fake is "
        "'stedloop.drivers.imspector.fake_specpy' (no hardware).",
    )
    reconnect_attempts: int = Field(
        3, ge=0, le=100, description="Reconnection tries before a frame, after a lost link."
    )
    reconnect_backoff_s: float = Field(
        1.0, ge=0, description="First wait between reconnection tries; doubles each try."
    )
    reconnect_max_delay_s: float = Field(30.0, ge=0, description="Longest wait between tries.")

    # -- measurement and configurations --------------------------------------------------
    measurement: str | None = Field(
        None, description="Imspector measurement to drive; empty means the active one."
    )
    confocal_before_configuration: str = Field(
        "Confocal", description="Configuration imaged first (confocal, depletion off)."
    )
    sted_configuration: str = Field("STED", description="Configuration imaged with STED.")
    confocal_after_configuration: str = Field(
        "Confocal", description="Configuration imaged last (may be the same as the first)."
    )
    overview_configuration: str | None = Field(
        None,
        description="Configuration for confocal overviews of a larger area (depletion off); "
        "empty: the driver takes no overviews and sessions use the tiling.",
    )
    stack: int | str = Field(
        0, description="Stack (index or name) of each configuration holding the detector image."
    )

    # -- parameter paths -------------------------------------------------------------------
    path_profile: Literal["current", "legacy"] = Field(
        "current", description="Parameter paths of current or older Imspector builds."
    )
    paths: dict[str, str] = Field(
        default_factory=dict, description="Per-quantity path overrides, e.g. depletion_power."
    )

    # -- calibration (stedloop units -> Imspector units) ---------------------------------
    excitation_uw_at_full_scale: float = Field(
        gt=0,
        description="Excitation power at the sample, µW, when Imspector's value is full scale.",
    )
    depletion_mw_at_full_scale: float = Field(
        gt=0, description="Depletion power at the sample, mW, when Imspector's value is full scale."
    )
    power_full_scale: float = Field(
        100.0, gt=0, description="Imspector's calibrated power value meaning full power (100 = %)."
    )
    readback_tolerance: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Largest relative difference between asked and read-back values.",
    )

    # -- confocal images ----------------------------------------------------------------------
    confocal_dwell_time_us: float | None = Field(
        None, gt=0, description="Dwell time of the confocal images; empty means the frame's."
    )
    confocal_excitation_uw: float | None = Field(
        None, ge=0, description="Excitation of the confocal images; empty means the frame's."
    )

    # -- geometry -----------------------------------------------------------------------------
    pixel_size_nm: float = Field(20.0, gt=0, description="Pixel size set in Imspector, nm.")
    field_px: int = Field(224, ge=8, le=8192, description="Frame width and height, pixels.")
    scan_origin_um: tuple[float, float] = Field(
        (0.0, 0.0), description="Imspector scan offset (x, y) µm of stedloop's sample origin."
    )
    sample_extent_um: tuple[float, float] | None = Field(
        None, description="Area (width, height) µm the scanner may visit; empty = unchecked."
    )
    dwell_time_range_us: tuple[float, float] = Field(
        (0.1, 1000.0), description="Dwell times (min, max) µs this setup accepts."
    )

    # -- raw data -------------------------------------------------------------------------------
    raw_output_dir: Path | None = Field(
        None, description="Save Imspector's raw measurement (.obf) here; sessions set their own."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ImspectorOptions:
        resolve_paths(self.path_profile, self.paths)  # unknown keys fail at config time
        low, high = self.dwell_time_range_us
        if not 0 < low < high:
            raise ValueError("dwell_time_range_us must be (min, max) with 0 < min < max")
        if self.sample_extent_um is not None and min(self.sample_extent_um) <= 0:
            raise ValueError("sample_extent_um must be positive")
        return self

    # -- derived ----------------------------------------------------------------------------
    def parameter_paths(self) -> ParameterPaths:
        return resolve_paths(self.path_profile, self.paths)

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else SPECPY_DEFAULT_PORT

    def role_configurations(self) -> dict[str, str]:
        """Frame image name -> Imspector configuration name, in acquisition order."""
        return {
            "confocal_before": self.confocal_before_configuration,
            "sted": self.sted_configuration,
            "confocal_after": self.confocal_after_configuration,
        }

    def all_configurations(self) -> list[str]:
        """Every configuration the driver sets (frames' and the overview's), each once."""
        names = list(self.role_configurations().values())
        if self.overview_configuration is not None:
            names.append(self.overview_configuration)
        return list(dict.fromkeys(names))


class Calibration:
    """Converts between stedloop units and Imspector's, both ways, from the options."""

    def __init__(self, options: ImspectorOptions) -> None:
        self._exc_full_uw = options.excitation_uw_at_full_scale
        self._dep_full_mw = options.depletion_mw_at_full_scale
        self._full_scale = options.power_full_scale

    # stedloop -> Imspector
    @staticmethod
    def dwell_to_imspector(dwell_time_us: float) -> float:
        return dwell_time_us * 1e-6  # seconds

    def excitation_to_imspector(self, excitation_uw: float) -> float:
        return excitation_uw / self._exc_full_uw * self._full_scale

    def depletion_to_imspector(self, depletion_mw: float) -> float:
        return depletion_mw / self._dep_full_mw * self._full_scale

    # Imspector -> stedloop
    @staticmethod
    def dwell_from_imspector(seconds: float) -> float:
        return seconds * 1e6

    def excitation_from_imspector(self, value: float) -> float:
        return value / self._full_scale * self._exc_full_uw

    def depletion_from_imspector(self, value: float) -> float:
        return value / self._full_scale * self._dep_full_mw
