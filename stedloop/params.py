"""The three optimised imaging parameters, their space, and the laser safety caps.

Units are physical and explicit in every name: pixel dwell time in microseconds, excitation
power in microwatts and depletion power in milliwatts at the sample. A driver whose
instrument speaks another unit (a calibrated percentage, a voltage) converts in the driver,
with the calibration in its own config section.

Safety caps are checked here, by ``SafetyCaps.check``, twice: when a config is validated
(ranges must lie within the caps) and by every driver right before anything is applied.
A value beyond a cap is refused with ``SafetyCapExceeded``; it is never clipped. The
optimizer's filter over many candidates (``SafetyCaps.allows_values``) uses the same dose
formula and the same comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stedloop.errors import ParameterRejected, SafetyCapExceeded

#: A number, or a numpy array of numbers (computed element by element).
FloatOrArray = TypeVar("FloatOrArray", float, np.ndarray)

#: The optimised parameters, in a fixed order (the optimizer's vector order), with units.
PARAM_NAMES: tuple[str, ...] = ("dwell_time_us", "excitation_uw", "depletion_mw")
PARAM_UNITS: dict[str, str] = {"dwell_time_us": "µs", "excitation_uw": "µW", "depletion_mw": "mW"}
PARAM_LABELS: dict[str, str] = {
    "dwell_time_us": "pixel dwell time",
    "excitation_uw": "excitation power",
    "depletion_mw": "depletion power",
}
#: Relative slack of every cap comparison: it absorbs float round-off of unit conversions,
#: nothing more.
CAP_TOLERANCE = 1e-12


def light_dose_per_pixel_uj(
    dwell_time_us: FloatOrArray, excitation_uw: FloatOrArray, depletion_mw: FloatOrArray
) -> FloatOrArray:
    """Light energy one pixel receives during the STED image (both beams), in µJ: watts times
    microseconds. The one formula, for single values and for numpy arrays (the optimizer
    filters thousands of candidates at once)."""
    power_w = excitation_uw * 1e-6 + depletion_mw * 1e-3
    dose_uj: FloatOrArray = power_w * dwell_time_us
    return dose_uj


def _beyond(value: FloatOrArray, cap: float) -> bool | np.ndarray:
    """True (element-wise) where ``value`` exceeds ``cap``: the one comparison of every cap."""
    return value > cap * (1 + CAP_TOLERANCE)


@dataclass(frozen=True, slots=True)
class ImagingParams:
    """One point of the parameter space: what the loop asks a driver to apply."""

    dwell_time_us: float
    excitation_uw: float
    depletion_mw: float

    def __post_init__(self) -> None:
        for name in PARAM_NAMES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParameterRejected(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ParameterRejected(f"{name} must be finite, got {value!r}")
            if value < 0:
                raise ParameterRejected(f"{name} must not be negative, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.dwell_time_us == 0:
            raise ParameterRejected("dwell_time_us must be positive, got 0")

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> ImagingParams:
        """Build from a dict, refusing missing and unknown keys by name."""
        unknown = sorted(set(values) - set(PARAM_NAMES))
        missing = [n for n in PARAM_NAMES if n not in values]
        if unknown:
            raise ParameterRejected(
                f"unknown imaging parameter(s) {', '.join(unknown)}; expected {', '.join(PARAM_NAMES)}"
            )
        if missing:
            raise ParameterRejected(f"missing imaging parameter(s) {', '.join(missing)}")
        return cls(**{n: values[n] for n in PARAM_NAMES})  # type: ignore[arg-type]

    @classmethod
    def from_vector(cls, vector: Iterable[float]) -> ImagingParams:
        return cls(*(float(v) for v in vector))

    def as_vector(self) -> list[float]:
        return [getattr(self, n) for n in PARAM_NAMES]

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def light_dose_per_pixel_uj(self) -> float:
        """Light energy delivered to one pixel during the STED image (both beams), in µJ."""
        return light_dose_per_pixel_uj(self.dwell_time_us, self.excitation_uw, self.depletion_mw)

    def describe(self) -> str:
        return ", ".join(f"{n}={getattr(self, n):.4g}" for n in PARAM_NAMES)


class SafetyCaps(BaseModel):
    """Hard limits that no proposal, request or config may exceed."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_depletion_mw: float = Field(350.0, gt=0, description="Highest depletion power, mW.")
    max_excitation_uw: float = Field(25.0, gt=0, description="Highest excitation power, µW.")
    max_light_dose_per_pixel_uj: float = Field(
        20.0,
        gt=0,
        description="Highest (excitation + depletion power) × dwell time per pixel, µJ.",
    )

    def violations(self, params: ImagingParams) -> list[str]:
        """Every cap the parameters exceed, each as a sentence; empty when safe."""
        problems = []
        if _beyond(params.depletion_mw, self.max_depletion_mw):
            problems.append(
                f"depletion_mw={params.depletion_mw:g} exceeds the safety cap "
                f"max_depletion_mw={self.max_depletion_mw:g}"
            )
        if _beyond(params.excitation_uw, self.max_excitation_uw):
            problems.append(
                f"excitation_uw={params.excitation_uw:g} exceeds the safety cap "
                f"max_excitation_uw={self.max_excitation_uw:g}"
            )
        dose = params.light_dose_per_pixel_uj()
        if _beyond(dose, self.max_light_dose_per_pixel_uj):
            problems.append(
                f"light dose per pixel {dose:.4g} µJ exceeds the safety cap "
                f"max_light_dose_per_pixel_uj={self.max_light_dose_per_pixel_uj:g}"
            )
        return problems

    def allows(self, params: ImagingParams) -> bool:
        return not self.violations(params)

    def allows_values(self, values: np.ndarray) -> np.ndarray:
        """Boolean mask over rows of values (n, 3) in ``PARAM_NAMES`` order: True where every
        cap allows. The same formula and comparisons as ``violations``, on whole arrays."""
        dwell_us, excitation_uw, depletion_mw = values[:, 0], values[:, 1], values[:, 2]
        dose_uj = light_dose_per_pixel_uj(dwell_us, excitation_uw, depletion_mw)
        allowed = np.ones(len(values), dtype=bool)
        for value, cap in (
            (depletion_mw, self.max_depletion_mw),
            (excitation_uw, self.max_excitation_uw),
            (dose_uj, self.max_light_dose_per_pixel_uj),
        ):
            allowed &= ~np.asarray(_beyond(value, cap))
        return allowed

    def check(self, params: ImagingParams) -> None:
        """Raise ``SafetyCapExceeded`` naming every exceeded cap. Never clips."""
        problems = self.violations(params)
        if problems:
            raise SafetyCapExceeded("refused: " + "; ".join(problems))


class ParamRange(BaseModel):
    """Range of one parameter; ``grid`` (optional) restricts it to listed values."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    min: float = Field(description="Lowest value, in the parameter's unit.")
    max: float = Field(description="Highest value, in the parameter's unit.")
    grid: tuple[float, ...] | None = Field(
        None, description="If set, only these values are proposed (each within min..max)."
    )
    log_scale: bool = Field(False, description="Search on a log scale (needs min > 0).")

    @model_validator(mode="after")
    def _consistent(self) -> ParamRange:
        if not (math.isfinite(self.min) and math.isfinite(self.max)):
            raise ValueError("min and max must be finite numbers")
        if self.min < 0:
            raise ValueError(f"min must not be negative (got {self.min:g})")
        if self.max <= self.min:
            raise ValueError(f"max ({self.max:g}) must be greater than min ({self.min:g})")
        if self.log_scale and self.min <= 0:
            raise ValueError("log_scale needs min > 0")
        if self.grid is not None:
            if len(self.grid) < 2:
                raise ValueError("a grid needs at least two values")
            outside = [g for g in self.grid if not self.min <= g <= self.max]
            if outside:
                raise ValueError(f"grid values {outside} lie outside min..max")
            if len(set(self.grid)) != len(self.grid):
                raise ValueError("grid values must be distinct")
        return self


class ParamSpace(BaseModel):
    """The box the optimizer searches, plus the caps that cut it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dwell_time_us: ParamRange = ParamRange(min=1.0, max=100.0, log_scale=True)
    excitation_uw: ParamRange = ParamRange(min=0.5, max=20.0)
    depletion_mw: ParamRange = ParamRange(min=0.0, max=350.0)

    def ranges(self) -> Iterator[tuple[str, ParamRange]]:
        for name in PARAM_NAMES:
            yield name, getattr(self, name)

    def check_within_caps(self, caps: SafetyCaps) -> None:
        """Config-time check: each range must lie within its cap, and some point must be safe."""
        if self.depletion_mw.max > caps.max_depletion_mw:
            raise SafetyCapExceeded(
                f"params.depletion_mw.max={self.depletion_mw.max:g} exceeds "
                f"safety.max_depletion_mw={caps.max_depletion_mw:g}"
            )
        if self.excitation_uw.max > caps.max_excitation_uw:
            raise SafetyCapExceeded(
                f"params.excitation_uw.max={self.excitation_uw.max:g} exceeds "
                f"safety.max_excitation_uw={caps.max_excitation_uw:g}"
            )
        lowest = ImagingParams(
            self.dwell_time_us.min, self.excitation_uw.min, self.depletion_mw.min
        )
        if not caps.allows(lowest):
            raise SafetyCapExceeded(
                "even the lowest corner of the parameter space is beyond the safety caps: "
                + "; ".join(caps.violations(lowest))
            )

    def outside_ranges(self, settable: Mapping[str, tuple[float, float]]) -> list[str]:
        """Each configured range reaching past ``settable`` (a driver's ``parameter_ranges``),
        as a sentence naming both ranges; empty when every range fits."""
        problems = []
        for name, rng in self.ranges():
            if name not in settable:
                continue
            low, high = settable[name]
            if rng.min < low or rng.max > high:
                unit = PARAM_UNITS[name]
                problems.append(
                    f"params.{name} {rng.min:g}..{rng.max:g} {unit} lies outside the "
                    f"driver's range {low:g}..{high:g} {unit}"
                )
        return problems

    def validate_point(self, params: ImagingParams) -> None:
        """Raise ``ParameterRejected`` if the point lies outside the space (or off its grid)."""
        for name, rng in self.ranges():
            value = getattr(params, name)
            if not rng.min <= value <= rng.max:
                raise ParameterRejected(
                    f"{name}={value:g} {PARAM_UNITS[name]} is outside the configured range "
                    f"{rng.min:g}..{rng.max:g}"
                )
            if rng.grid is not None and not any(math.isclose(value, g) for g in rng.grid):
                raise ParameterRejected(f"{name}={value:g} is not on the configured grid")
