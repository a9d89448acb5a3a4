"""The parameter space as scikit-optimize sees it, and the safety caps as a vectorised filter.

Each imaging parameter becomes one skopt dimension, in ``PARAM_NAMES`` order:
- a plain range is a ``Real`` (``log-uniform`` when the range asks for a log scale);
- a range with a ``grid`` is an ``Integer`` over the grid's indices, sorted, so the surrogate
  still sees the values as ordered (a ``Categorical`` would forget that 20 µs lies between
  10 and 30 µs).
Dimensions are normalised to [0, 1] for the Gaussian process.

The safety caps cut the box: the light dose per pixel couples the three parameters, so part
of the box is forbidden. ``SearchSpace.allowed`` is the skopt ``space_constraint``; every
proposal is also re-checked with ``SafetyCaps.check`` (the one definition of the caps).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from skopt.space import Integer, Real, Space
from skopt.utils import normalize_dimensions

from stedloop.errors import ParameterRejected
from stedloop.params import PARAM_NAMES, ImagingParams, ParamSpace, SafetyCaps


class SearchSpace:
    """ParamSpace + SafetyCaps in skopt terms: dimensions, transforms and the cap filter."""

    def __init__(self, params: ParamSpace, caps: SafetyCaps) -> None:
        params.check_within_caps(caps)
        self.params = params
        self.caps = caps
        self.grids: dict[int, np.ndarray] = {}
        dimensions = []
        for index, (name, rng) in enumerate(params.ranges()):
            if rng.grid is not None:
                grid = np.array(sorted(rng.grid), dtype=float)
                self.grids[index] = grid
                dimensions.append(Integer(0, len(grid) - 1, name=name))
            else:
                prior = "log-uniform" if rng.log_scale else "uniform"
                dimensions.append(Real(rng.min, rng.max, prior=prior, name=name))
        self.space = Space(normalize_dimensions(dimensions), constraint=self.allowed)

    # -- conversions between skopt points (grid indices) and physical values -------------
    def to_values(self, point: Sequence[float]) -> np.ndarray:
        """A skopt point (grid dims as indices) to physical values, in PARAM_NAMES order."""
        values = np.array(point, dtype=float)
        for index, grid in self.grids.items():
            values[index] = grid[round(float(point[index]))]
        return values

    def to_values_many(self, points: np.ndarray) -> np.ndarray:
        values = np.array(points, dtype=float)
        for index, grid in self.grids.items():
            values[:, index] = grid[np.rint(values[:, index]).astype(int)]
        return values

    def to_point(self, params: ImagingParams) -> list[float | int]:
        """Physical values to a skopt point; refuses values off the grid or outside the box."""
        self.params.validate_point(params)
        point: list[float | int] = []
        for index, value in enumerate(params.as_vector()):
            if index in self.grids:
                point.append(int(np.argmin(np.abs(self.grids[index] - value))))
            else:
                point.append(float(value))
        return point

    def to_params(self, point: Sequence[float]) -> ImagingParams:
        return ImagingParams.from_vector(self.to_values(point))

    # -- the caps as a filter --------------------------------------------------------------
    def allowed_values(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Boolean mask over rows of physical values (n, 3): True where the caps allow."""
        dwell_us, excitation_uw, depletion_mw = values[:, 0], values[:, 1], values[:, 2]
        dose_uj = (excitation_uw * 1e-6 + depletion_mw * 1e-3) * dwell_us
        return (
            (depletion_mw <= self.caps.max_depletion_mw)
            & (excitation_uw <= self.caps.max_excitation_uw)
            & (dose_uj <= self.caps.max_light_dose_per_pixel_uj)
        )

    def allowed(self, point: Sequence[float]) -> bool:
        """skopt ``space_constraint``: is this (untransformed) point within the caps?"""
        return self.caps.allows(self.to_params(point))

    def checked_params(self, point: Sequence[float]) -> ImagingParams:
        """The proposal as ImagingParams, after the authoritative caps check (never clipped)."""
        params = self.to_params(point)
        self.caps.check(params)
        self.params.validate_point(params)
        return params

    # -- vectorised transforms: the GP's [0, 1] coordinates <-> skopt points -------------
    # The same arithmetic as skopt's Normalize/LogN transformers, on whole arrays: skopt's
    # own (inverse_)transform loops over points in Python, which for a few thousand
    # candidates per decision costs tens of milliseconds of interpreter time (and GIL).
    def unit_to_points(self, unit: np.ndarray) -> np.ndarray:
        """GP coordinates (n, 3) -> skopt points (grid dimensions as integer indices)."""
        unit = np.atleast_2d(np.asarray(unit, dtype=float))
        points = np.empty_like(unit)
        for index, dim in enumerate(self.space.dimensions):
            low, high = float(dim.low), float(dim.high)
            if index in self.grids:
                points[:, index] = np.round(np.clip(unit[:, index] * (high - low) + low, low, high))
            elif dim.prior == "log-uniform":
                log_low, log_high = self._log_bounds(dim)
                logs = unit[:, index] * (log_high - log_low) + log_low
                points[:, index] = np.clip(dim.base**logs, low, high)
            else:
                points[:, index] = np.clip(unit[:, index] * (high - low) + low, low, high)
        return points

    def points_to_unit(self, points: np.ndarray) -> np.ndarray:
        """skopt points (n, 3) -> GP coordinates; the inverse of ``unit_to_points``."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        unit = np.empty_like(points)
        for index, dim in enumerate(self.space.dimensions):
            low, high = float(dim.low), float(dim.high)
            if dim.prior == "log-uniform" and index not in self.grids:
                log_low, log_high = self._log_bounds(dim)
                logs = np.log10(points[:, index]) / np.log10(dim.base)
                unit[:, index] = (logs - log_low) / (log_high - log_low)
            else:
                unit[:, index] = (points[:, index] - low) / (high - low)
        return unit

    def unit_to_values(self, unit: np.ndarray) -> np.ndarray:
        """Box coordinates in [0, 1] (n, 3) -> physical values (grid values snapped)."""
        return self.to_values_many(self.unit_to_points(np.clip(unit, 0.0, 1.0)))

    def values_to_unit(self, values: np.ndarray) -> np.ndarray:
        """Physical values (n, 3) -> box coordinates. A value between two grid values maps
        between their indices (rounded to one of them when turned into a point)."""
        points = np.array(np.atleast_2d(values), dtype=float)
        for index, grid in self.grids.items():
            points[:, index] = np.interp(points[:, index], grid, np.arange(len(grid)))
        return self.points_to_unit(points)

    @staticmethod
    def _log_bounds(dim: Real) -> tuple[float, float]:
        scale = np.log10(dim.base)
        return float(np.log10(dim.low) / scale), float(np.log10(dim.high) / scale)

    def transform(self, points: Sequence[Sequence[float]]) -> np.ndarray:
        """skopt points -> the GP's [0, 1] coordinates."""
        unit: np.ndarray = self.space.transform([list(p) for p in points])  # skopt is untyped
        return unit

    def inverse_transform(self, unit: np.ndarray) -> list[list[float]]:
        points: list[list[float]] = self.space.inverse_transform(np.atleast_2d(unit))
        return points

    @property
    def n_dims(self) -> int:
        return len(PARAM_NAMES)


def describe_rejection(space: SearchSpace, params: ImagingParams) -> str:
    problems = space.caps.violations(params)
    try:
        space.params.validate_point(params)
    except ParameterRejected as exc:
        problems.append(str(exc))
    return "; ".join(problems)
