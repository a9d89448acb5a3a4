"""The Bayesian optimizer: caps, grids, log scale, determinism, failed points, efficiency."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stedloop.config.schema import OptimizerSection
from stedloop.errors import ParameterRejected
from stedloop.optimize import BayesianOptimizer, SearchSpace, resolve_score_transform
from stedloop.params import ImagingParams, ParamRange, ParamSpace, SafetyCaps

FAST = OptimizerSection(n_candidates=500, n_initial_points=5)


def peak_beyond_cap(p: ImagingParams) -> float:
    """Best at long dwell and high depletion: far beyond the light-dose cap."""
    return math.log(p.dwell_time_us) / math.log(100) + p.depletion_mw / 350 + p.excitation_uw / 20


def dose_ridge(p: ImagingParams) -> float:
    """The shape of a real landscape: best along a ridge of equal light dose (dwell x
    excitation = 8 µs·µW, from 1 µs at 8 µW to 16 µs at 0.5 µW), at moderate depletion."""
    log_dose_offset = math.log(p.dwell_time_us * p.excitation_uw / 8.0)
    return math.exp(-((log_dose_offset / 0.5) ** 2) - ((p.depletion_mw - 120) / 120) ** 2)


def test_skopt_space_constraint_only_samples_allowed_points() -> None:
    caps = SafetyCaps(max_light_dose_per_pixel_uj=2.0)
    space = SearchSpace(ParamSpace(), caps)
    points = space.space.rvs(n_samples=300, random_state=1)
    assert all(caps.allows(space.to_params(p)) for p in points)
    # The unconstrained box would have many points beyond 2 µJ: the constraint did cut it.
    box = SearchSpace(ParamSpace(), SafetyCaps()).space.rvs(n_samples=300, random_state=1)
    assert sum(not caps.allows(space.to_params(p)) for p in box) > 100


def test_proposals_never_exceed_the_caps_even_when_the_optimum_lies_beyond() -> None:
    caps = SafetyCaps(max_light_dose_per_pixel_uj=2.0)
    optimizer = BayesianOptimizer(SearchSpace(ParamSpace(), caps), FAST, seed=4)
    doses = []
    for k in range(25):
        params = optimizer.ask(k).params
        assert caps.allows(params), params
        doses.append(params.light_dose_per_pixel_uj())
        optimizer.tell(params, peak_beyond_cap(params))
    # The optimizer is drawn to the cap boundary, and stays inside it.
    assert max(doses) > 1.5
    assert max(doses) <= 2.0


def test_grid_dimensions_propose_only_grid_values_and_log_scale_is_used() -> None:
    grid = (10.0, 20.0, 30.0, 50.0, 100.0)
    space = ParamSpace(
        dwell_time_us=ParamRange(min=10, max=100, grid=grid),
        excitation_uw=ParamRange(min=0.5, max=20, log_scale=True),
        depletion_mw=ParamRange(min=0, max=100),
    )
    optimizer = BayesianOptimizer(SearchSpace(space, SafetyCaps()), FAST, seed=0)
    excitations = []
    for k in range(15):
        params = optimizer.ask(k).params
        assert params.dwell_time_us in grid
        space.validate_point(params)
        excitations.append(params.excitation_uw)
        optimizer.tell(params, -abs(params.dwell_time_us - 30) - params.depletion_mw / 100)
    # Log-uniform warm-up: about as many points below 3.2 µW (geometric middle) as above.
    assert sum(e < 3.2 for e in excitations[:5]) >= 1


def test_same_seed_and_tells_give_the_same_proposals_and_rebuild_matches() -> None:
    space = SearchSpace(ParamSpace(), SafetyCaps())
    first = BayesianOptimizer(space, FAST, seed=11)
    asked = []
    for k in range(9):
        params = first.ask(k).params
        asked.append(params)
        first.tell(params, dose_ridge(params))
    # Rebuilt from the record (asks replayed in order, then tells), the next proposal matches.
    rebuilt = BayesianOptimizer(space, FAST, seed=11)
    for k, params in enumerate(asked):
        assert rebuilt.ask(k).params == params
        rebuilt.tell(params, dose_ridge(params))
    assert rebuilt.ask(9).params == first.ask(9).params
    other = BayesianOptimizer(space, FAST, seed=12)
    assert other.ask(0).params != asked[0]


def test_background_preparation_changes_nothing_but_the_timing() -> None:
    space = SearchSpace(ParamSpace(), SafetyCaps())
    settings = OptimizerSection(n_candidates=300, n_initial_points=3, refit_every=2)
    plain, prepared = BayesianOptimizer(space, settings, 5), BayesianOptimizer(space, settings, 5)
    for k in range(10):
        params = plain.ask(k).params
        assert prepared.ask(k).params == params
        prepared.prepare()  # as the session does while the frame is acquired
        plain.tell(params, dose_ridge(params))
        prepared.tell(params, dose_ridge(params))


def test_nan_is_never_told_and_failed_points_are_not_proposed_again() -> None:
    optimizer = BayesianOptimizer(SearchSpace(ParamSpace(), SafetyCaps()), FAST, seed=2)
    first = optimizer.ask(0).params
    with pytest.raises(ParameterRejected, match="non-finite"):
        optimizer.tell(first, float("nan"))
    assert optimizer.n_told == 0
    optimizer.mark_failed(first)
    # Asking for the same frame number again must not return the failed design point.
    assert optimizer.ask(0).params != first
    for k in range(1, 10):
        params = optimizer.ask(k).params
        assert params != first
        optimizer.tell(params, dose_ridge(params))


def test_beats_random_search_on_a_ridge_of_equal_light_dose() -> None:
    space = SearchSpace(ParamSpace(), SafetyCaps())
    bayes, random = [], []
    for seed in range(3):
        noise = np.random.default_rng(seed)
        optimizer = BayesianOptimizer(space, FAST, seed=seed)
        for k in range(20):
            params = optimizer.ask(k).params
            optimizer.tell(params, dose_ridge(params) + noise.normal(0, 0.03))
        bayes.append(dose_ridge(optimizer.best()[0]))
        draws = space.space.rvs(n_samples=20, random_state=seed)
        random.append(max(dose_ridge(space.to_params(p)) for p in draws))
    assert np.median(bayes) > 0.8, bayes
    assert np.median(bayes) > np.median(random) + 0.2, (bayes, random)


def test_log_transform_models_the_floored_log_and_stays_deterministic() -> None:
    space = SearchSpace(ParamSpace(), SafetyCaps())
    log_settings = FAST.model_copy(update={"score_transform": "log"})
    optimizer = BayesianOptimizer(space, log_settings, seed=0)
    scores = [0.5, 0.0, 1e-5, 0.2, 0.3]
    for k, score in enumerate(scores):
        optimizer.tell(optimizer.ask(k).params, score)
    # Floored, never -inf; the GP minimises, so it sees minus the log.
    np.testing.assert_allclose(optimizer._gp_targets(), -np.log([0.5, 0.01, 0.01, 0.2, 0.3]))
    np.testing.assert_allclose(optimizer._gp_targets(3), -np.log([0.5, 0.01, 0.01]))
    # Same tells, same proposals, with or without the background fit.
    replay = BayesianOptimizer(space, log_settings, seed=0)
    for k, score in enumerate(scores):
        replay.tell(replay.ask(k).params, score)
        if k == 2:
            replay.prepare()
    assert optimizer.ask(5) == replay.ask(5)
    plain = BayesianOptimizer(space, FAST.model_copy(update={"score_transform": "none"}), 0)
    for k, score in enumerate(scores):
        plain.tell(plain.ask(k).params, score)
    np.testing.assert_allclose(plain._gp_targets(), -np.array(scores))


def test_auto_score_transform_is_log_only_for_a_product_of_objectives() -> None:
    assert OptimizerSection().score_transform == "none"  # the default
    auto = OptimizerSection(score_transform="auto")
    assert resolve_score_transform(auto, "product").score_transform == "log"
    for method in ("weighted_sum", "chebyshev"):
        assert resolve_score_transform(auto, method).score_transform == "none"
    explicit = OptimizerSection(score_transform="none")
    assert resolve_score_transform(explicit, "product").score_transform == "none"


def test_space_refuses_ranges_beyond_the_caps() -> None:
    with pytest.raises(ParameterRejected, match="exceeds"):
        SearchSpace(ParamSpace(), SafetyCaps(max_depletion_mw=100))
