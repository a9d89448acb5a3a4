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

    # -- skopt points (grid dimensions as indices) <-> physical values -------------------
    def points_to_values(self, points: np.ndarray) -> np.ndarray:
        """skopt points (n, 3) to physical values, in PARAM_NAMES order (grid indices looked
        up, rounded to the nearest index)."""
        values = np.array(np.atleast_2d(points), dtype=float)
        for index, grid in self.grids.items():
            values[:, index] = grid[np.rint(values[:, index]).astype(int)]
        return values

    def values_to_points(self, values: np.ndarray) -> np.ndarray:
        """Physical values (n, 3) to skopt points: a grid value becomes the index of the
        nearest grid value."""
        points = np.array(np.atleast_2d(values), dtype=float)
        for index, grid in self.grids.items():
            points[:, index] = np.argmin(np.abs(grid[None, :] - points[:, [index]]), axis=1)
        return points

    def to_params(self, point: Sequence[float]) -> ImagingParams:
        """One skopt point as ImagingParams (for skopt's own optimizer in the benchmarks)."""
        return ImagingParams.from_vector(self.points_to_values(np.asarray(point))[0])

    # -- imaging parameters <-> the optimizer's [0, 1] coordinates ----------------------
    def params_to_unit(self, params: ImagingParams) -> np.ndarray:
        """The optimizer's coordinates of ``params``; refuses values off the grid or outside
        the box."""
        self.params.validate_point(params)
        unit: np.ndarray = self.points_to_unit(
            self.values_to_points(np.array([params.as_vector()]))
        )
        row: np.ndarray = unit[0]
        return row

    def unit_to_params(self, unit: np.ndarray) -> ImagingParams:
        """The proposal at ``unit`` as ImagingParams, after the authoritative caps check
        (never clipped) and the check against the box."""
        values = self.points_to_values(self.unit_to_points(unit))[0]
        params = ImagingParams.from_vector(values)
        self.caps.check(params)
        self.params.validate_point(params)
        return params

    # -- the caps as a filter --------------------------------------------------------------
    def allowed_values(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Boolean mask over rows of physical values (n, 3): True where the caps allow."""
        return self.caps.allows_values(values)

    def allowed(self, point: Sequence[float]) -> bool:
        """skopt ``space_constraint``: is this (untransformed) point within the caps?"""
        return self.caps.allows(self.to_params(point))

    # -- the one mapping between the optimizer's [0, 1] coordinates and skopt points -----
    # The same arithmetic as skopt's Normalize/LogN transformers, on whole arrays: skopt's
    # own (inverse_)transform loops over points in Python, which for a few thousand
    # candidates per decision costs tens of milliseconds of interpreter time (and GIL).
    # Proposals, tells and candidates all go through these two; skopt's own transforms are
    # only the reference they are tested against (tests/test_optimize_space_transforms.py).
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
        return self.points_to_values(self.unit_to_points(np.clip(unit, 0.0, 1.0)))

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
