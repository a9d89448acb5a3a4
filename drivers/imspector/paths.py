"""Imspector parameter paths: where each setting lives in Imspector's parameter tree.

The paths differ between Imspector builds, so they are data, not code: a named profile
("current" or "legacy") gives the defaults, and ``[drivers.imspector.paths]`` overrides any
single path. Units on the Imspector side: seconds for the dwell time, metres for geometry,
the instrument's calibrated power value (usually % of full power) for the lasers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stedloop.errors import ConfigError

ProfileName = Literal["current", "legacy"]


class ParameterPaths(BaseModel):
    """One Imspector parameter path per quantity the driver sets and reads back."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dwell_time: str = Field(description="Pixel dwell time, seconds.")
    excitation_power: str = Field(description="Excitation laser power, calibrated units.")
    depletion_power: str = Field(description="Depletion (STED) laser power, calibrated units.")
    pixel_size_x: str = Field(description="Pixel size along x, metres.")
    pixel_size_y: str = Field(description="Pixel size along y, metres.")
    length_x: str = Field(description="Scan range (field of view) along x, metres.")
    length_y: str = Field(description="Scan range (field of view) along y, metres.")
    offset_x: str = Field(description="Scan centre offset along x, metres.")
    offset_y: str = Field(description="Scan centre offset along y, metres.")
    resolution_x: str = Field(description="Pixels along x (read back only).")
    resolution_y: str = Field(description="Pixels along y (read back only).")

    def laser_paths(self) -> tuple[str, str]:
        return (self.excitation_power, self.depletion_power)


_SCAN = "ExpControl/scan/range"
_GEOMETRY = {
    "pixel_size_x": f"{_SCAN}/x/psz",
    "pixel_size_y": f"{_SCAN}/y/psz",
    "length_x": f"{_SCAN}/x/len",
    "length_y": f"{_SCAN}/y/len",
    "offset_x": f"{_SCAN}/x/off",
    "offset_y": f"{_SCAN}/y/off",
    "resolution_x": f"{_SCAN}/x/res",
    "resolution_y": f"{_SCAN}/y/res",
}

#: Defaults per Imspector generation. Laser ids 5 (excitation) and 6 (depletion) follow one
#: published setup; every site checks its own ids in Imspector's parameter browser.
PROFILES: dict[str, ParameterPaths] = {
    # Current builds: per-channel laser settings and per-step pixel durations.
    "current": ParameterPaths(
        dwell_time="ExpControl/measurement/pixel_steps/step_duration/0",
        excitation_power="ExpControl/measurement/channels/0/lasers/5/power/calibrated",
        depletion_power="ExpControl/measurement/channels/0/lasers/6/power/calibrated",
        **_GEOMETRY,
    ),
    # Older builds: one dwell time for the scan and a laser array indexed by laser id.
    "legacy": ParameterPaths(
        dwell_time="ExpControl/scan/dwelltime",
        excitation_power="ExpControl/lasers/power_calibrated/5/value/calibrated",
        depletion_power="ExpControl/lasers/power_calibrated/6/value/calibrated",
        **_GEOMETRY,
    ),
}


def resolve_paths(profile: str, overrides: dict[str, str] | None = None) -> ParameterPaths:
    """The profile's paths with ``overrides`` (quantity name -> path) applied on top."""
    if profile not in PROFILES:
        raise ConfigError(
            f"unknown Imspector path profile {profile!r}; expected one of {', '.join(PROFILES)}"
        )
    base = PROFILES[profile].model_dump()
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ConfigError(
            f"unknown key(s) in drivers.imspector.paths: {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(base))}"
        )
    for key, path in overrides.items():
        if not isinstance(path, str) or not path.strip("/"):
            raise ConfigError(f"drivers.imspector.paths.{key} must be a non-empty path string")
    try:
        return ParameterPaths.model_validate({**base, **overrides})
    except ValidationError as exc:  # pragma: no cover - all fields are plain strings
        raise ConfigError(f"invalid Imspector paths: {exc}") from None
