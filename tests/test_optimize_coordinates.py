"""The optimizer's inputs: the box itself, or (dwell, log light dose, depletion)."""

from __future__ import annotations

import numpy as np
import pytest

from stedloop.config.schema import OptimizerSection
from stedloop.optimize import BayesianOptimizer, SearchSpace
from stedloop.optimize.coordinates import BoxCoordinates, LightDoseCoordinates
from stedloop.params import ImagingParams, ParamRange, ParamSpace, SafetyCaps

DEFAULT = SearchSpace(ParamSpace(), SafetyCaps())
GRIDDED = SearchSpace(
    ParamSpace(
        dwell_time_us=ParamRange(min=10, max=100, grid=(10, 20, 50, 100)),
        excitation_uw=ParamRange(min=0.0, max=20.0),
        depletion_mw=ParamRange(min=0, max=300, grid=(0, 100, 200, 300)),
    ),
    SafetyCaps(),
)


def unit_of(space: SearchSpace, *params: ImagingParams) -> np.ndarray:
    return np.array([space.params_to_unit(p) for p in params])


def test_equal_light_dose_gives_equal_dose_input_whatever_the_dwell() -> None:
    coordinates = LightDoseCoordinates(DEFAULT)
    unit = unit_of(
        DEFAULT,
        ImagingParams(1.0, 9.0, 100.0),
        ImagingParams(18.0, 0.5, 100.0),
        ImagingParams(2.0, 9.0, 100.0),
    )
    inputs = coordinates.to_inputs(unit)
    assert inputs[0, 1] == pytest.approx(inputs[1, 1])
    assert inputs[2, 1] > inputs[0, 1]  # twice the dose
    # Dwell and depletion keep the box's own coordinates (log dwell).
    np.testing.assert_array_equal(inputs[:, [0, 2]], unit[:, [0, 2]])
    corners = coordinates.to_inputs(np.array([[0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 1.0]]))
    assert corners.min() >= 0.0 and corners.max() <= 1.0
    assert corners[0, 1] == 0.0 and corners[1, 1] == pytest.approx(1.0)


@pytest.mark.parametrize("space", [DEFAULT, GRIDDED], ids=["default", "gridded, zero excitation"])
def test_light_dose_inputs_map_back_onto_the_same_points(space: SearchSpace) -> None:
    coordinates = LightDoseCoordinates(space)
    rng = np.random.default_rng(0)
    snapped = space.points_to_unit(space.unit_to_points(rng.uniform(size=(300, 3))))
    inputs = coordinates.to_inputs(snapped)
    assert np.isfinite(inputs).all()
    back, inside = coordinates.from_inputs(inputs)
    # Rows at zero excitation have no dose to invert (it is floored): all others come back.
    positive = space.unit_to_values(snapped)[:, 1] > 0
    assert inside[positive].all()
    np.testing.assert_allclose(
        space.unit_to_values(back[positive]), space.unit_to_values(snapped[positive]), rtol=1e-9
    )


def test_a_dose_the_excitation_range_cannot_give_at_that_dwell_is_outside_the_box() -> None:
    coordinates = LightDoseCoordinates(DEFAULT)
    # The longest dwell with the lowest dose would need less than the minimum excitation,
    # the shortest dwell with the highest dose more than the maximum.
    _, inside = coordinates.from_inputs(np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]]))
    assert not inside.any()
    _, inside = coordinates.from_inputs(np.array([[0.5, 0.5, 0.5], [0.5, 1.2, 0.5]]))
    assert inside.tolist() == [True, False]  # past the edge of the inputs


def test_box_coordinates_are_the_identity() -> None:
    unit = np.random.default_rng(1).uniform(size=(10, 3))
    np.testing.assert_array_equal(BoxCoordinates().to_inputs(unit), unit)
    back, inside = BoxCoordinates().from_inputs(unit)
    np.testing.assert_array_equal(back, unit)
    assert inside.all()


@pytest.mark.parametrize("kind", ["light-dose", "parameters"])
def test_both_input_kinds_propose_allowed_points_of_the_space(kind: str) -> None:
    settings = OptimizerSection(surrogate_inputs=kind, n_candidates=300)
    caps = SafetyCaps(max_light_dose_per_pixel_uj=5.0)
    space = SearchSpace(GRIDDED.params, caps)
    optimizer = BayesianOptimizer(space, settings, seed=3)
    for k in range(10):
        params = optimizer.ask(k).params
        assert caps.allows(params)
        assert params.dwell_time_us in (10, 20, 50, 100)
        assert params.depletion_mw in (0, 100, 200, 300)
        optimizer.tell(params, params.excitation_uw * params.dwell_time_us / 1000.0)
