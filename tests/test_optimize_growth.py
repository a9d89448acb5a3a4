"""The optimizer with a long history: capped model, bounded decision time, exact replay."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from stedloop.config import load_config
from stedloop.config.schema import OptimizerSection
from stedloop.errors import ConfigError
from stedloop.optimize import BayesianOptimizer, SearchSpace
from stedloop.optimize.bayes import _model_subset
from stedloop.params import ImagingParams, ParamSpace, SafetyCaps


def ridge(p: ImagingParams) -> float:
    """Best along a ridge of equal light dose at moderate depletion (see test_optimize_bayes)."""
    offset = np.log(p.dwell_time_us * p.excitation_uw / 8.0)
    return float(np.exp(-((offset / 0.5) ** 2) - ((p.depletion_mw - 120) / 120) ** 2))


def told(optimizer: BayesianOptimizer, n: int, seed: int = 0) -> None:
    """``n`` observations at random allowed points, as a long history would bring."""
    rng = np.random.default_rng(seed)
    search = optimizer.space
    for point in search.space.rvs(n_samples=n, random_state=seed):
        params = search.to_params(point)
        optimizer.tell(params, ridge(params) + rng.normal(0, 0.03))


def test_subset_keeps_the_best_the_newest_and_spreads_the_rest() -> None:
    rng = np.random.default_rng(3)
    inputs = rng.uniform(size=(1000, 3))
    targets = rng.normal(size=1000)  # minimised
    chosen = _model_subset(inputs, targets, 200)
    assert len(chosen) == 200 and np.all(np.diff(chosen) > 0)
    assert set(np.argsort(targets)[:50]) <= set(chosen)  # the best quarter
    assert set(range(950, 1000)) <= set(chosen)  # the newest quarter

    # The rest fills the gaps: every point lies closer to the subset than with 200 random.
    def worst_gap(rows: np.ndarray) -> float:
        return float(np.max(np.min(np.linalg.norm(inputs[:, None] - inputs[rows], axis=2), 1)))

    random_rows = rng.choice(1000, size=200, replace=False)
    assert worst_gap(chosen) < worst_gap(random_rows)
    np.testing.assert_array_equal(_model_subset(inputs[:150], targets[:150], 200), range(150))


def test_a_thousand_observations_fit_a_capped_model_and_decide_in_bounded_time() -> None:
    # Before the cap, the first decision after 1,000 observations optimised hyper-parameters
    # on all of them (18 s to a minute on 2 cores) and each later one took about a second.
    space = SearchSpace(ParamSpace(), SafetyCaps())
    optimizer = BayesianOptimizer(space, OptimizerSection(), seed=1)
    told(optimizer, 1000)
    started = time.perf_counter()
    params = optimizer.ask(1000).params
    for k in range(1001, 1011):
        optimizer.tell(params, ridge(params))
        params = optimizer.ask(k).params
        assert space.caps.allows(params)
    elapsed = time.perf_counter() - started
    assert optimizer._fit().X_train_.shape[0] == OptimizerSection().max_model_points
    assert elapsed < 15.0, f"11 decisions at 1,000 observations took {elapsed:.1f} s"


@pytest.mark.parametrize("policy", ["explore", "exploit-after-plateau"])
def test_long_history_replays_exactly_with_or_without_background_fits(policy: str) -> None:
    # Past 50 observations the hyper-parameters start from the last ones on a subset: a
    # replay of the same tells (the resume path, no prepare()) must meet the same values.
    space = SearchSpace(ParamSpace(), SafetyCaps())
    settings = OptimizerSection(
        n_candidates=300, max_model_points=40, refit_every=2, policy=policy, plateau_frames=3
    )
    live, replay = BayesianOptimizer(space, settings, 7), BayesianOptimizer(space, settings, 7)
    told(live, 60)
    told(replay, 60)
    for k in range(60, 80):
        proposal = live.ask(k)
        assert replay.ask(k) == proposal
        live.prepare()  # the session overlaps the next fit with the acquisition
        live.tell(proposal.params, ridge(proposal.params))
        replay.tell(proposal.params, ridge(proposal.params))
    live.join_background()


def test_max_model_points_below_ten_is_refused_naming_the_key(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text("[optimizer]\nmax_model_points = 5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(site, environ={})
    assert "optimizer.max_model_points (5) must be 0 (all observations) or at least 10" in str(
        info.value
    )
    assert load_config(environ={}).config.optimizer.max_model_points == 200
