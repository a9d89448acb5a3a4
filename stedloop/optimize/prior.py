"""Warm start: which settings earlier sessions found good, as the first frames of a new one.

Earlier sessions on the same microscope (same driver, structure, space and objectives) hold
scored frames. A new sample of the same structure usually has its best settings where they
had theirs; a changed sample (another dye, brightness, structure) may not. So the prior is
used as a *design*, not as data: the first ``PRIOR_DESIGN_POINTS`` warm-up frames go to the
best settings the earlier sessions imaged, and the new session's surrogate learns from its
own frames only. From its first model-based frame on, today's sample decides (transfer, not
replay); benchmarks/RESULTS.md measures both cases.

Scores are standardised per session before they are pooled: a dimmer sample or another
scorer shifts one session's scores, not where its best lies. They are ranked as observed:
smoothing them with a Gaussian process over the pooled frames first, in a small probe on the
simulator, picked worse settings as often as better ones, and up to 16 % worse where a smooth
fit of three sessions flattened the narrow top (benchmarks/RESULTS.md). Settings that today's
box or today's safety caps exclude are dropped here, and ``BayesianOptimizer`` checks again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stedloop.config.schema import OptimizerSection
from stedloop.optimize.coordinates import make_coordinates
from stedloop.optimize.space import SearchSpace
from stedloop.params import ImagingParams

#: Warm-up frames taken at the prior's best settings (the rest of the warm-up stays
#: space-filling, so a changed sample is still explored). Two: a single one often misses
#: the narrow top (the earlier best is one noisy frame on one region), so one prior frame
#: halved the frames to 95 % on a like sample less reliably than two on the simulator;
#: benchmarks/RESULTS.md.
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
) -> list[PriorObservation]:
    """The earlier frames whose settings the new session images first, best first: the
    highest per-session standardised scores, ``MIN_SEPARATION`` apart in the surrogate's
    inputs, inside today's box and caps. Deterministic for the same inputs (ties: the order
    of ``observations``)."""
    usable = [o for o in observations if _allowed_today(space, o.params) and np.isfinite(o.score)]
    if not usable or n_points < 1:
        return []
    coordinates = make_coordinates(settings.surrogate_inputs, space)
    unit = space.values_to_unit(np.array([o.params.as_vector() for o in usable]))
    inputs = coordinates.to_inputs(unit)
    rating = _standardised(usable)
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
