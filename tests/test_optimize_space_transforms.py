"""One mapping between the optimizer's unit cube and imaging parameters: the vectorised
transforms, which agree exactly with scikit-optimize's own (the reference here)."""

from __future__ import annotations

import numpy as np
import pytest

from stedloop.config.schema import OptimizerSection
from stedloop.optimize import BayesianOptimizer, SearchSpace
from stedloop.params import ImagingParams, ParamRange, ParamSpace, SafetyCaps

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


@pytest.mark.parametrize("name", SPACES)
def test_params_map_to_the_unit_cube_as_skopt_maps_them(name: str) -> None:
    space = SearchSpace(SPACES[name], SafetyCaps())
    values = space.unit_to_values(np.random.default_rng(1).uniform(size=(200, 3)))
    allowed = values[space.allowed_values(values)]
    assert len(allowed) > 50
    for row in allowed:
        params = ImagingParams.from_vector(row)
        point = [
            int(np.argmin(np.abs(space.grids[i] - v))) if i in space.grids else v
            for i, v in enumerate(params.as_vector())
        ]
        expected = np.asarray(space.space.transform([point])[0], dtype=float)
        np.testing.assert_array_equal(space.params_to_unit(params), expected)
        back = space.unit_to_params(space.params_to_unit(params))
        np.testing.assert_allclose(back.as_vector(), params.as_vector(), rtol=1e-12)


def test_the_optimizer_uses_only_the_one_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proposals and tells go through ``SearchSpace``'s own transforms; skopt's per-point
    transforms (the second implementation it once also used) are never called."""

    def refused(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("skopt's Space transforms are a second mapping")

    space = SearchSpace(SPACES["grid depletion, log excitation"], SafetyCaps())
    monkeypatch.setattr(space.space, "transform", refused)
    monkeypatch.setattr(space.space, "inverse_transform", refused)
    settings = OptimizerSection(n_initial_points=3, n_candidates=256)
    optimizer = BayesianOptimizer(space, settings, seed=4)
    for index in range(6):
        params = optimizer.ask(index).params
        optimizer.tell(params, score=float(params.excitation_uw))
    optimizer.mark_failed(ImagingParams(10.0, 1.0, 100.0))
    assert optimizer.n_told == 6
