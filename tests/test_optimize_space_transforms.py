"""The vectorised unit-cube transforms agree exactly with scikit-optimize's own."""

from __future__ import annotations

import numpy as np
import pytest

from stedloop.optimize import SearchSpace
from stedloop.params import ParamRange, ParamSpace, SafetyCaps

SPACES = {
    "default (log dwell)": ParamSpace(),
    "grid depletion, log excitation": ParamSpace(
        depletion_mw=ParamRange(min=0, max=300, grid=(0, 50, 100, 200, 300)),
        excitation_uw=ParamRange(min=0.5, max=20, log_scale=True),
    ),
}


@pytest.mark.parametrize("name", SPACES)
def test_vectorised_transforms_match_skopt(name: str) -> None:
    space = SearchSpace(SPACES[name], SafetyCaps())
    unit = np.random.default_rng(0).uniform(size=(500, 3))
    expected_points = np.asarray(space.space.inverse_transform(unit), dtype=float)
    points = space.unit_to_points(unit)
    np.testing.assert_array_equal(points, expected_points)
    as_skopt = [[int(v) if i in space.grids else v for i, v in enumerate(p)] for p in points]
    expected_unit = np.asarray(space.space.transform(as_skopt), dtype=float)
    np.testing.assert_array_equal(space.points_to_unit(points), expected_unit)
    # Outside the cube is clipped onto the bounds, as skopt does.
    edges = space.unit_to_points(np.array([[-0.5, 1.5, 0.0]]))[0]
    assert edges[0] == pytest.approx(space.space.dimensions[0].low)
    assert edges[1] == pytest.approx(space.space.dimensions[1].high)
