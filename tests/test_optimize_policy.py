"""optimizer.policy: exploitation after a plateau, for images worth keeping."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stedloop.config import load_config
from stedloop.config.schema import OptimizerSection
from stedloop.drivers import create_driver
from stedloop.objectives.bleaching import BleachingObjective
from stedloop.objectives.resolution import ResolutionObjective
from stedloop.optimize import BayesianOptimizer, SearchSpace
from stedloop.params import ImagingParams, ParamSpace, SafetyCaps
from stedloop.session import Session
from stedloop.store import SessionStore

FAST = OptimizerSection(n_candidates=300, n_initial_points=5)


def ridge(p: ImagingParams) -> float:
    """Best along a ridge of equal light dose at moderate depletion (see test_optimize_bayes)."""
    offset = math.log(p.dwell_time_us * p.excitation_uw / 8.0)
    return math.exp(-((offset / 0.5) ** 2) - ((p.depletion_mw - 120) / 120) ** 2)


def session(
    policy: str,
    seed: int,
    frames: int = 30,
    caps: SafetyCaps | None = None,
    plateau_frames: int = FAST.plateau_frames,
) -> list:
    """(source, true value, params) of each frame; frames are noisy, as on a sample."""
    space = SearchSpace(ParamSpace(), caps or SafetyCaps())
    settings = FAST.model_copy(update={"policy": policy, "plateau_frames": plateau_frames})
    optimizer = BayesianOptimizer(space, settings, seed)
    noise = np.random.default_rng(seed)
    out = []
    for k in range(frames):
        proposal = optimizer.ask(k)
        value = ridge(proposal.params)
        optimizer.tell(proposal.params, value + noise.normal(0, 0.05))
        out.append((proposal.source, value, proposal.params))
    return out


def late_yield(frames: list) -> float:
    """Share of frames from frame 20 on within 90 % of the session's best (true values)."""
    values = [v for _, v, _ in frames]
    return float(np.mean([v >= 0.9 * max(values) for v in values[20:]]))


def test_explore_is_the_default_and_never_exploits() -> None:
    assert OptimizerSection().policy == "explore"
    assert {source for source, _, _ in session("explore", 0, frames=25)} <= {"design", "model"}


def test_exploit_after_plateau_switches_once_nothing_better_turns_up() -> None:
    frames = session("exploit-after-plateau", 1, plateau_frames=5)
    sources = [source for source, _, _ in frames]
    # Not before the warm-up and one plateau's worth of model frames.
    assert "exploit" not in sources[: FAST.n_initial_points + 5]
    exploited = [value for source, value, _ in frames if source == "exploit"]
    assert len(exploited) >= 8, sources
    # Near the best: no exploitation frame is a poor image, where exploration spends some.
    best = max(value for _, value, _ in frames)
    assert min(exploited) >= 0.7 * best, exploited
    explored = [value for _, value, _ in session("explore", 1)[FAST.n_initial_points + 5 :]]
    assert min(explored) < 0.5 * best, explored


def test_exploitation_gives_more_good_frames_without_losing_the_best() -> None:
    explore = [session("explore", seed) for seed in range(3)]
    exploit = [session("exploit-after-plateau", seed) for seed in range(3)]
    assert np.mean([late_yield(f) for f in exploit]) > np.mean([late_yield(f) for f in explore])
    best_explore = [max(v for _, v, _ in f) for f in explore]
    best_exploit = [max(v for _, v, _ in f) for f in exploit]
    assert np.median(best_exploit) >= np.median(best_explore) - 0.02


def test_exploitation_never_exceeds_the_caps() -> None:
    caps = SafetyCaps(max_light_dose_per_pixel_uj=2.0)
    frames = session("exploit-after-plateau", 2, frames=25, caps=caps, plateau_frames=5)
    assert any(source == "exploit" for source, _, _ in frames)
    assert all(caps.allows(params) for _, _, params in frames)


@pytest.mark.parametrize("policy", ["explore", "exploit-after-plateau"])
def test_a_session_with_the_policy_records_the_source_and_resumes_the_same(
    tmp_path: Path, policy: str
) -> None:
    overrides: dict[str, Any] = {
        "session": {"budget_frames": 14, "retry_delay_s": 0.0},
        "optimizer": {
            "random_seed": 7,
            "n_candidates": 300,
            "n_initial_points": 3,
            "policy": policy,
            "plateau_frames": 3,
        },
        "objectives": {"names": ["resolution", "bleaching"]},
        "drivers": {"simulator": {"sample_fields": 4, "field_px": 64}},
    }
    loaded = load_config(overrides=overrides)
    store = SessionStore(tmp_path / "sessions")

    def driver() -> Any:
        built = create_driver(loaded.config)
        built.connect()
        return built

    objectives = [ResolutionObjective(), BleachingObjective()]
    first = Session.start(loaded, driver(), store=store, objectives=objectives)
    first.run()
    first.close()
    history = store.open(first.id).history()
    sources = [f.source for f in history.done_frames()]
    assert ("exploit" in sources) == (policy == "exploit-after-plateau"), sources
    resumed = Session.resume(first.id, loaded, driver(), store=store, objectives=objectives)
    assert resumed.optimizer.n_told == 14
    assert resumed.optimizer.ask(14) == first.optimizer.ask(14)
    resumed.close()
