"""Warm start: which settings earlier sessions found good, as the first frames of a new one.

Earlier sessions on the same microscope (same driver, structure, space and objectives) hold
scored frames. A new sample of the same structure usually has its best settings where they
had theirs; a changed sample (another dye, brightness, structure) may not. So the prior is
used as a *design*, not as data: the first ``PRIOR_DESIGN_POINTS`` warm-up frames go to the
settings a Gaussian process over the earlier frames rates best (smoothed, so one lucky noisy
frame does not win), and the new session's surrogate learns from its own frames only. From
the first model-based frame on, today's sample decides (transfer, not replay);
benchmarks/RESULTS.md measures both cases.

Scores are standardised per session before they are pooled: a dimmer sample or another
scorer shifts one session's scores, not where its best lies. Settings that today's box or
today's safety caps exclude are dropped here, and ``BayesianOptimizer`` checks again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skopt.learning import GaussianProcessRegressor
from skopt.learning.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

from stedloop.config.schema import OptimizerSection
from stedloop.optimize.bayes import MIN_LENGTH_SCALE, MIN_NOISE_LEVEL
from stedloop.optimize.coordinates import make_coordinates
from stedloop.optimize.space import SearchSpace
from stedloop.params import ImagingParams

#: Warm-up frames taken at the prior's best settings (the rest of the warm-up stays
#: space-filling, so a changed sample is still explored): benchmarks/bench_warm_start.py.
PRIOR_DESIGN_POINTS = 2
#: Chosen points are at least this far apart in the surrogate's inputs (one tenth of an
#: axis): two frames on the same setting would tell today's model nothing new.
MIN_SEPARATION = 0.1
#: Box coordinates may stray this far outside [0, 1] by rounding and still count as inside.
_BOX_TOLERANCE = 1e-9


@dataclass(frozen=True)
class PriorObservation:
    """One scored frame of an earlier session: the settings applied and its combined score."""

    session: str
    frame: int
    params: ImagingParams
    score: float


def prior_design(
    space: SearchSpace,
    settings: OptimizerSection,
    observations: Sequence[PriorObservation],
    n_points: int = PRIOR_DESIGN_POINTS,
    seed: int = 0,
) -> list[PriorObservation]:
    """The earlier frames whose settings the new session images first, best first: the
    highest smoothed (per-session standardised) scores, ``MIN_SEPARATION`` apart, inside
    today's box and caps. Deterministic for the same inputs."""
    usable = [o for o in observations if _allowed_today(space, o.params) and np.isfinite(o.score)]
    if not usable or n_points < 1:
        return []
    coordinates = make_coordinates(settings.surrogate_inputs, space)
    unit = space.values_to_unit(np.array([o.params.as_vector() for o in usable]))
    inputs = coordinates.to_inputs(unit)
    rating = _smoothed(inputs, _standardised(usable), seed)
    chosen: list[int] = []
    for index in np.argsort(-rating, kind="stable"):
        far = all(np.linalg.norm(inputs[index] - inputs[c]) >= MIN_SEPARATION for c in chosen)
        if far:
            chosen.append(int(index))
        if len(chosen) == n_points:
            break
    return [usable[i] for i in chosen]


def _allowed_today(space: SearchSpace, params: ImagingParams) -> bool:
    values = np.array([params.as_vector()])
    if not bool(space.allowed_values(values)[0]):
        return False  # beyond today's safety caps: never proposed
    unit = space.values_to_unit(values)[0]
    return bool(np.all((unit >= -_BOX_TOLERANCE) & (unit <= 1 + _BOX_TOLERANCE)))


def _standardised(observations: Sequence[PriorObservation]) -> np.ndarray:
    """Scores as z-scores within their session (a session with one score contributes 0)."""
    scores = np.array([o.score for o in observations], dtype=float)
    sessions = np.array([o.session for o in observations])
    out = np.zeros_like(scores)
    for session in dict.fromkeys(sessions.tolist()):
        mask = sessions == session
        spread = float(np.std(scores[mask]))
        out[mask] = (scores[mask] - scores[mask].mean()) / spread if spread > 0 else 0.0
    return out


def _smoothed(inputs: np.ndarray, scores: np.ndarray, seed: int) -> np.ndarray:
    """The posterior mean of a GP over the pooled frames at each frame (the recipe of
    ``BayesianOptimizer``'s surrogate); the scores themselves when there are too few."""
    if len(scores) < 4 or float(np.std(scores)) == 0:
        return scores
    kernel = ConstantKernel(1.0, (0.01, 1000.0)) * Matern(
        length_scale=np.ones(inputs.shape[1]), length_scale_bounds=(MIN_LENGTH_SCALE, 100.0), nu=2.5
    ) + WhiteKernel(1.0, (MIN_NOISE_LEVEL, 1e5))
    model = GaussianProcessRegressor(
        kernel=kernel,
        normalize_y=True,
        noise="gaussian",
        n_restarts_optimizer=2,
        random_state=np.random.RandomState(seed & 0xFFFFFFFF),
    )
    model.fit(inputs, scores)
    mean: np.ndarray = np.asarray(model.predict(inputs), dtype=float)
    return mean
