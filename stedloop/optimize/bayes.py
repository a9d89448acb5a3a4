"""Bayesian optimisation by ask/tell: a Gaussian process over the capped parameter box.

Built from scikit-optimize's pieces (``Space`` with a ``space_constraint``, the initial point
generators, its noise-aware ``GaussianProcessRegressor`` and acquisition functions), arranged
for a microscope loop:

* **Deterministic from the ledger.** Every random draw of proposal ``k`` comes from a generator
  seeded with ``(seed, k)``, and hyper-parameters are re-optimised at fixed observation
  counts, so replaying the recorded asks and tells rebuilds the very same state.
* **Fast decisions.** Hyper-parameters (length scales, amplitude, noise) are re-optimised only
  every ``refit_every`` observations; in between the GP is refitted with the last kernel
  (a 50×50 Cholesky, well under a millisecond), and the acquisition is maximised over a few
  thousand sampled candidates — uniform ones plus perturbations of the best points so far —
  instead of L-BFGS from 10,000 points. A long history does not slow this down: the GP is
  fitted on a capped subset (the best, the newest, a space-filling rest), and past 50
  observations the hyper-parameters start from the last ones on at most 100 points.
* **Exploration or images** (``policy``): ``exploit-after-plateau`` proposes the surest good
  settings near the best once the search has stopped finding better ones.
* **Physical coordinates.** The GP, the warm-up design and the candidates work in the inputs
  of ``stedloop.optimize.coordinates`` (by default dwell, log light dose, depletion), where
  the ridges of equal dose that good settings lie on run along an axis.
* **Caps cut the box.** Candidates beyond the safety caps are dropped before the acquisition
  is evaluated; the winner is re-checked with ``SafetyCaps.check``.
* **Failed points are never told as a number.** ``mark_failed`` only keeps the point from
  being proposed again.

Scores are maximised (the session's combined objective); the GP models ``-score``.
"""

from __future__ import annotations

import functools
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import solve_triangular
from scipy.optimize import minimize
from scipy.spatial.distance import cdist
from sklearn.exceptions import ConvergenceWarning
from skopt.acquisition import _gaussian_acquisition
from skopt.learning import GaussianProcessRegressor
from skopt.learning.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from skopt.space import Real, Space
from skopt.utils import cook_initial_point_generator
from threadpoolctl import ThreadpoolController

from stedloop.config.schema import OptimizerSection
from stedloop.errors import ParameterRejected
from stedloop.optimize.coordinates import make_coordinates
from stedloop.optimize.space import SearchSpace
from stedloop.params import ImagingParams

# Hyper-parameters at their bounds are normal for a surrogate (a flat direction, little
# noise); the GP's convergence chatter says nothing a user can act on. A filter for that one
# category and module, not catch_warnings(), which is not thread-safe (background fits).
warnings.filterwarnings("ignore", category=ConvergenceWarning, module=r"sklearn\.gaussian_process")

#: Points closer than this (in the GP's [0, 1] coordinates) count as the same point.
DUPLICATE_DISTANCE = 1e-6
HEDGE_FUNCTIONS = ("EI", "LCB", "PI")
#: Scores below this count as this much under ``score_transform = "log"`` (log of 0 is -inf).
LOG_SCORE_FLOOR = 0.01
# Priors of the surrogate, in its [0, 1] inputs and standardised scores. Frames are noisy
# (photon noise, a new region each time, now and then an empty one): without these floors
# the hyper-parameter fit explains that noise by wiggles a few hundredths of an axis wide
# and no noise at all, and then proposes where the wiggles point.
MIN_LENGTH_SCALE = 0.1
MIN_NOISE_LEVEL = 0.05
# A long history (a long session, or earlier sessions' frames) would make every decision cost
# O(n^2) to O(n^3): the GP is fitted on a capped subset (``max_model_points``), and past
# FULL_HYPER_POINTS observations the hyper-parameters are re-optimised on at most HYPER_POINTS
# of them, from the last ones and without random restarts (they change little by then).
FULL_HYPER_POINTS = 50
HYPER_POINTS = 100
#: L-BFGS iterations of a hyper-parameter optimisation that starts from the last result.
WARM_HYPER_ITERATIONS = 25
#: With a capped model, hyper-parameters are re-optimised every refit_every observations or
#: every this share of the observations, whichever is more (they settle as data grow).
REFIT_SHARE = 0.04
# exploit-after-plateau: a gain smaller than this many standard deviations of the modelled
# scores does not count as progress; exploitation candidates lie this close to the best.
PLATEAU_GAIN_STD = 0.1
EXPLOIT_SCALE = 0.03


@dataclass(frozen=True)
class Proposal:
    """What ``ask`` returns: the parameters and how they were chosen."""

    params: ImagingParams
    index: int
    #: "prior" (warm-up at an earlier session's best, ``stedloop.optimize.prior``), "design"
    #: (space-filling warm-up), "random" (too few observations), "model" (acquisition) or
    #: "exploit" (the surest good settings, after a plateau under exploit-after-plateau)
    source: str


@functools.lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


class _FastRegressor(GaussianProcessRegressor):  # type: ignore[misc]
    """skopt's regressor whose predictive standard deviation is one matrix product, not a
    three-operand einsum (no BLAS): 70 ms instead of a few at 250 points x 2,000 candidates."""

    def predict(self, X: Any, return_std: bool = False, **kwargs: Any) -> Any:
        if not return_std or kwargs or not hasattr(self, "X_train_"):
            return super().predict(X, return_std=return_std, **kwargs)
        X = np.asarray(X, dtype=float)
        K_trans = self.kernel_(X, self.X_train_)
        y_mean = K_trans @ self.alpha_ * self.y_train_std_ + self.y_train_mean_
        v = solve_triangular(self.L_, K_trans.T, lower=True, check_finite=False)
        y_var = self.kernel_.diag(X) - np.einsum("ij,ij->j", v, v)
        y_std = np.sqrt(np.maximum(y_var, 0.0) * self.y_train_std_**2)
        return y_mean, y_std


def _rng(seed: int, *keys: int) -> np.random.RandomState:
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, *keys]).generate_state(1)[0]
    return np.random.RandomState(int(state))


class BayesianOptimizer:
    """Ask/tell optimiser over a ``SearchSpace``; maximises the told scores."""

    _regressor: type[GaussianProcessRegressor] = _FastRegressor

    def __init__(
        self,
        space: SearchSpace,
        settings: OptimizerSection,
        seed: int = 0,
        prior_points: Sequence[ImagingParams] = (),
    ) -> None:
        self.space = space
        self.settings = settings
        self.seed = int(seed)
        self._coordinates = make_coordinates(settings.surrogate_inputs, space)
        self._unit_told: list[np.ndarray] = []
        self._scores: list[float] = []
        self._params_told: list[ImagingParams] = []
        self._unit_excluded: list[np.ndarray] = []  # failed points
        self._design = self._initial_design()
        self._n_prior = self._put_prior_first(prior_points)
        self._kernel: Any = None  # sklearn kernel (untyped); hyper-parameters of the last refit (without the noise term)
        self._noise: float | None = None
        self._refit_at = 0  # re-optimise hyper-parameters once this many points are told
        self._hyper_lock = threading.Lock()
        self._hyper_cache: dict[int, tuple[Any, float]] = {}  # observation count -> result
        self._hyper_threads: dict[int, threading.Thread] = {}
        self._model: GaussianProcessRegressor | None = None
        self._model_n = -1
        self._hedge_gains = np.zeros(len(HEDGE_FUNCTIONS))
        self._hedge_last: np.ndarray | None = None

    # -- public API -----------------------------------------------------------------------
    @property
    def n_told(self) -> int:
        return len(self._scores)

    def ask(self, index: int) -> Proposal:
        """The proposal for frame ``index`` (0-based); the same inputs give the same answer."""
        # The GP's matrices are tiny (n ≤ a few hundred): BLAS threads only add contention,
        # 7x slower decisions measured on a loaded 2-core machine.
        with _blas_controller().limit(limits=1, user_api="blas"):
            return self._ask(index)

    def _ask(self, index: int) -> Proposal:
        if index < len(self._design):
            unit = self._design[index]
            if not self._is_excluded(unit):
                return self._proposal(unit, index, "prior" if index < self._n_prior else "design")
        if self.n_told < 2:
            return self._proposal(self._random_allowed(_rng(self.seed, index, 1)), index, "random")
        unit, source = self._model_proposal(index)
        return self._proposal(unit, index, source)

    def tell(self, params: ImagingParams, score: float) -> None:
        """Record the combined score of ``params`` (higher is better). NaN is refused."""
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ParameterRejected(
                f"cannot tell a non-finite score ({score!r}); record the point with mark_failed"
            )
        self._unit_told.append(self._unit(params))
        self._scores.append(float(score))
        self._params_told.append(params)

    def mark_failed(self, params: ImagingParams) -> None:
        """Remember a point whose frame or objectives failed, so it is not proposed again."""
        self._unit_excluded.append(self._unit(params))

    def best(self) -> tuple[ImagingParams, float] | None:
        """The best observed point and its score, or None before any tell."""
        if not self._scores:
            return None
        i = int(np.argmax(self._scores))
        return self._params_told[i], self._scores[i]

    # -- internals ------------------------------------------------------------------------
    def _gp_targets(self, count: int | None = None) -> np.ndarray:
        """What the GP models for the first ``count`` observations: minus the (transformed)
        scores, as it minimises."""
        scores = np.asarray(self._scores[:count], dtype=float)
        transform = self.settings.score_transform
        if transform == "log":
            # Products of objectives span decades; on a log scale their factors add up.
            scores = np.log(np.maximum(scores, LOG_SCORE_FLOOR))
        return -scores

    def _inputs(self, unit: np.ndarray) -> np.ndarray:
        """What the GP sees of box-coordinate rows (``surrogate_inputs``)."""
        return self._coordinates.to_inputs(unit)

    def _unit(self, params: ImagingParams) -> np.ndarray:
        return self.space.params_to_unit(params)

    def _proposal(self, unit: np.ndarray, index: int, source: str) -> Proposal:
        return Proposal(self.space.unit_to_params(unit), index, source)

    def _visited(self) -> np.ndarray:
        rows = self._unit_told + self._unit_excluded
        return np.array(rows) if rows else np.empty((0, self.space.n_dims))

    def _is_excluded(self, unit: np.ndarray) -> bool:
        visited = self._visited()
        if not len(visited):
            return False
        return bool(np.min(np.linalg.norm(visited - unit, axis=1)) < DUPLICATE_DISTANCE)

    def _round_trip(self, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Snap unit-cube rows onto the space (grid indices, bounds); return (unit, values)."""
        points = self.space.unit_to_points(np.clip(unit, 0.0, 1.0))
        return self.space.points_to_unit(points), self.space.points_to_values(points)

    def _allowed_unit(self, unit: np.ndarray) -> np.ndarray:
        snapped, values = self._round_trip(unit)
        allowed: np.ndarray = snapped[self.space.allowed_values(values)]
        return allowed

    def _allowed_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """Box coordinates of the input rows that lie in the box and that the caps allow."""
        unit, inside = self._coordinates.from_inputs(inputs)
        return self._allowed_unit(unit[inside])

    def _random_allowed(self, rng: np.random.RandomState, n: int = 1) -> np.ndarray:
        """Points uniform in the GP's inputs that the caps allow (log dims are log-uniform)."""
        found: list[np.ndarray] = []
        for _ in range(50):
            batch = self._allowed_inputs(rng.uniform(size=(max(4 * n, 64), self.space.n_dims)))
            found.extend(batch)
            if len(found) >= n:
                return np.array(found[:n]) if n > 1 else found[0]
        raise ParameterRejected(
            "the safety caps leave (almost) nothing of the parameter space: no allowed point "
            "found in 3,200 random draws; widen the caps or narrow the ranges"
        )

    def _initial_design(self) -> list[np.ndarray]:
        """A space-filling warm-up design in the GP's inputs, restricted to the allowed points.

        The generator's points are drawn in growing numbers until enough are allowed, then a
        greedy max-min subset keeps them spread out (the caps cut corners off the box, and
        the light-dose inputs reach beyond it)."""
        n = self.settings.n_initial_points
        generator = cook_initial_point_generator(
            "random" if self.settings.initial_design == "random" else self.settings.initial_design
        )
        cube = Space([Real(0.0, 1.0)] * self.space.n_dims)
        rng = _rng(self.seed, 0xD5)
        for size in (n, 2 * n, 4 * n, 8 * n, 16 * n):
            if generator is None:
                inputs = rng.uniform(size=(size, self.space.n_dims))
            else:
                inputs = np.asarray(generator.generate(cube.dimensions, size, random_state=rng))
            allowed = self._allowed_inputs(inputs)
            if len(allowed) >= n:
                chosen = _maximin_subset(self._inputs(allowed), n)
                return [allowed[i] for i in chosen]
        return list(self._random_allowed(rng, n).reshape(n, -1))

    # -- warm start (the hook of stedloop.optimize.prior) --------------------------------
    def _put_prior_first(self, prior_points: Sequence[ImagingParams]) -> int:
        """Warm start: the first warm-up frames go to ``prior_points`` (settings earlier
        sessions found good), those today's box and caps allow; the rest of the warm-up stays
        space-filling, and the surrogate learns from this session's frames only. Returns how
        many design points are prior ones."""
        chosen: list[np.ndarray] = []
        for params in prior_points[: self.settings.n_initial_points]:
            unit = self.space.values_to_unit(np.array([params.as_vector()]))
            if np.any((unit < -1e-9) | (unit > 1 + 1e-9)):
                continue  # outside today's box
            allowed = self._allowed_unit(unit)  # snapped to the grid, within today's caps
            if len(allowed):
                chosen.append(allowed[0])
        if chosen:
            self._design = chosen + self._design[: len(self._design) - len(chosen)]
        return len(chosen)

    # -- the surrogate ---------------------------------------------------------------------
    # Hyper-parameters are re-optimised when ``refit_every`` new observations have arrived,
    # on all observations but the newest: those are known while the next frame is still being
    # acquired, so ``prepare()`` can do the slow part in the background, and the decision
    # after the frame only refits the GP with fixed hyper-parameters. Replaying a ledger
    # without ``prepare()`` computes the same values in the foreground.
    def prepare(self) -> None:
        """Start the next hyper-parameter optimisation in a background thread, if the next
        decision will need it and its data are known. Call it while a frame is acquired."""
        upcoming = self.n_told + 1
        if self._kernel is not None and upcoming < self._refit_at:
            return
        count = _hyper_count(upcoming)
        if count != self.n_told or count < 2:
            return
        with self._hyper_lock:
            if count in self._hyper_cache or count in self._hyper_threads:
                return
            X, y = self._inputs(np.array(self._unit_told)), self._gp_targets(count)
            previous = self._previous_hyper()
            # Not a daemon thread: the interpreter waits for it at exit. A daemon thread
            # still inside scipy's C++ distance code then is killed by a forced unwind,
            # which aborts the process ("terminate called without an active exception").
            thread = threading.Thread(
                target=self._optimise_hyper, args=(X, y, count, previous), name="stedloop-gp"
            )
            self._hyper_threads[count] = thread
        thread.start()

    def join_background(self) -> None:
        """Wait for the background hyper-parameter fits to end (a session calls this when it
        stops, so no thread of it outlives the run)."""
        with self._hyper_lock:
            threads = list(self._hyper_threads.values())
        for thread in threads:
            thread.join()

    def _previous_hyper(self) -> tuple[Any, float] | None:
        """Where the next hyper-parameter optimisation starts, once the data are many: the
        last ones (a function of the recorded observations, so a replay meets the same)."""
        if self.settings.max_model_points == 0 or self._kernel is None or self._noise is None:
            return None
        return self._kernel, self._noise

    def _optimise_hyper(
        self, X: np.ndarray, y: np.ndarray, count: int, previous: tuple[Any, float] | None
    ) -> None:
        X, y = X[:count], y[:count]
        restarts = self.settings.hyperparameter_restarts
        white = (MIN_NOISE_LEVEL, 1e5)
        if count > FULL_HYPER_POINTS and self.settings.max_model_points:
            # Many observations: a subset pins the hyper-parameters down as well.
            chosen = _model_subset(X, y, HYPER_POINTS)
            X, y = X[chosen], y[chosen]
        optimizer: Any = "fmin_l_bfgs_b"
        if count > FULL_HYPER_POINTS and previous is not None:
            # ... and the last ones are close: start there, a few steps, no random restarts.
            restarts, optimizer = 0, _few_lbfgs_steps
            kernel = previous[0] + WhiteKernel(max(previous[1], white[0]), white)
        else:
            kernel = ConstantKernel(1.0, (0.01, 1000.0)) * Matern(
                length_scale=np.ones(self.space.n_dims),
                length_scale_bounds=(MIN_LENGTH_SCALE, 100.0),
                nu=2.5,
            ) + WhiteKernel(1.0, white)
        model = GaussianProcessRegressor(
            kernel=kernel,
            normalize_y=True,
            noise="gaussian",
            n_restarts_optimizer=restarts,
            optimizer=optimizer,
            random_state=_rng(self.seed, 0xF17, count),
        )
        with _blas_controller().limit(limits=1, user_api="blas"):
            model.fit(X, y)
        noise = float(model.noise_) if model.noise_ else 1e-5
        with self._hyper_lock:
            # Sum(signal, White(0)) after skopt's noise hack: keep the signal part.
            self._hyper_cache[count] = (model.kernel_.k1, noise)

    def _hyper(self, count: int) -> tuple[Any, float]:
        with self._hyper_lock:
            thread = self._hyper_threads.pop(count, None)
        if thread is not None:
            thread.join()
        with self._hyper_lock:
            cached = self._hyper_cache.get(count)
        if cached is None:
            X = self._inputs(np.array(self._unit_told[:count]))
            self._optimise_hyper(X, self._gp_targets(count), count, self._previous_hyper())
            with self._hyper_lock:
                cached = self._hyper_cache[count]
        return cached

    def _fit(self) -> GaussianProcessRegressor:
        if self._model is not None and self._model_n == self.n_told:
            return self._model
        if self._kernel is None or self.n_told >= self._refit_at:
            self._kernel, self._noise = self._hyper(_hyper_count(self.n_told))
            interval = self.settings.refit_every
            if self.settings.max_model_points:
                interval = max(interval, int(REFIT_SHARE * self.n_told))
            self._refit_at = self.n_told + interval
        model = self._regressor(
            kernel=self._kernel, normalize_y=True, noise=self._noise, optimizer=None
        )
        X, y = self._inputs(np.array(self._unit_told)), self._gp_targets()
        if self.settings.max_model_points:
            chosen = _model_subset(X, y, self.settings.max_model_points)
            X, y = X[chosen], y[chosen]
        model.fit(X, y)
        self._model, self._model_n = model, self.n_told
        return model

    def _candidates(self, rng: np.random.RandomState) -> np.ndarray:
        n = self.settings.n_candidates
        n_local = n // 4
        uniform = self._allowed_inputs(rng.uniform(size=(n - n_local, self.space.n_dims)))
        # Perturbations of the best points; those past an edge of the box land on it.
        order = np.argsort(self._scores)[::-1][:3]
        centres = self._inputs(np.array(self._unit_told)[order])
        local = centres[rng.randint(len(centres), size=n_local)] + rng.normal(
            scale=0.05, size=(n_local, self.space.n_dims)
        )
        local_unit, _ = self._coordinates.from_inputs(local)
        candidates = np.vstack([uniform, self._allowed_unit(local_unit)])
        visited = self._visited()
        if len(visited) and len(candidates):
            distance = cdist(candidates, visited).min(axis=1)
            candidates = candidates[distance >= DUPLICATE_DISTANCE]
        return candidates

    def _model_proposal(self, index: int) -> tuple[np.ndarray, str]:
        model = self._fit()
        rng = _rng(self.seed, index, 2)
        candidates = self._candidates(rng)
        if not len(candidates):
            return self._random_allowed(rng), "model"
        if self.settings.policy == "exploit-after-plateau" and self._plateaued(model):
            exploit = self._exploit(model, _rng(self.seed, index, 3))
            if exploit is not None:
                return exploit, "exploit"
        return self._acquisition_max(model, rng, candidates), "model"

    def _plateaued(self, model: GaussianProcessRegressor) -> bool:
        """Whether the last ``plateau_frames`` observations found nothing the model rates
        better (by more than a tenth of the scores' spread) than the best before them.

        Judged by the model's mean at the observed points, not by single frames, which are
        noisy; a function of the observations only, so a replay decides the same."""
        recent = self.settings.plateau_frames
        if self.n_told < self.settings.n_initial_points + recent:
            return False
        # Minimised targets: lower is better.
        mean = model.predict(self._inputs(np.array(self._unit_told)))
        targets = self._gp_targets()
        gain = float(np.min(mean[:-recent]) - np.min(mean[-recent:]))
        return gain <= PLATEAU_GAIN_STD * float(np.std(targets))

    def _exploit(
        self, model: GaussianProcessRegressor, rng: np.random.RandomState
    ) -> np.ndarray | None:
        """The candidate near the model's best observed points with the best pessimistic
        estimate (mean plus one standard deviation of the minimised score): settings the
        model is surest give a good image, where exploration would spend a frame."""
        inputs = self._inputs(np.array(self._unit_told))
        order = np.argsort(model.predict(inputs))[:3]
        n = self.settings.n_candidates // 4
        local = inputs[order][rng.randint(len(order), size=n)] + rng.normal(
            scale=EXPLOIT_SCALE, size=(n, self.space.n_dims)
        )
        local_unit, _ = self._coordinates.from_inputs(local)
        candidates = self._allowed_unit(local_unit)
        visited = self._visited()
        if len(candidates) and len(visited):
            candidates = candidates[cdist(candidates, visited).min(axis=1) >= DUPLICATE_DISTANCE]
        if not len(candidates):
            return None
        mean, std = model.predict(self._inputs(candidates), return_std=True)
        chosen: np.ndarray = candidates[int(np.argmin(mean + std))]
        return chosen

    def _acquisition_max(
        self, model: GaussianProcessRegressor, rng: np.random.RandomState, candidates: np.ndarray
    ) -> np.ndarray:
        inputs = self._inputs(candidates)
        # "Plug-in" improvement: over the model's best mean at an observed point, not over the
        # best single observation, which with noisy frames is mostly a lucky one.
        y_best = float(np.min(model.predict(model.X_train_)))
        kwargs = {"xi": self.settings.xi, "kappa": self.settings.kappa}
        if self.settings.acquisition != "gp_hedge":
            values = _gaussian_acquisition(
                inputs,
                model,
                y_opt=y_best,
                acq_func=self.settings.acquisition,
                acq_func_kwargs=kwargs,
            )
            best: np.ndarray = candidates[int(np.argmin(values))]
            return best
        # GP-Hedge (Hoffman et al. 2011), as skopt does it: each acquisition nominates a point,
        # and is rewarded by the model's later prediction at the point it nominated.
        if self._hedge_last is not None:
            self._hedge_gains -= model.predict(self._inputs(self._hedge_last))
        nominees = []
        for function in HEDGE_FUNCTIONS:
            values = _gaussian_acquisition(
                inputs, model, y_opt=y_best, acq_func=function, acq_func_kwargs=kwargs
            )
            nominees.append(candidates[int(np.argmin(values))])
        self._hedge_last = np.array(nominees)
        logits = self._hedge_gains - np.max(self._hedge_gains)
        probs = np.exp(logits) / np.sum(np.exp(logits))
        chosen: np.ndarray = nominees[int(np.argmax(rng.multinomial(1, probs)))]
        return chosen


def resolve_score_transform(settings: OptimizerSection, scalarisation: str) -> OptimizerSection:
    """``score_transform = "auto"`` made concrete: log for a product of objectives (its log is
    a weighted sum of log utilities; that helped the GP in the box's own coordinates, 18
    instead of 30 frames, but not in light-dose ones: benchmarks/RESULTS.md), the score
    itself otherwise."""
    if settings.score_transform != "auto":
        return settings
    transform = "log" if scalarisation == "product" else "none"
    return settings.model_copy(update={"score_transform": transform})


def _hyper_count(n_told: int) -> int:
    """Observations the hyper-parameters of a decision with ``n_told`` points are fitted on:
    all but the newest (known one frame earlier), once there are enough of them."""
    return n_told - 1 if n_told >= 4 else n_told


def _few_lbfgs_steps(
    objective: Any, initial: np.ndarray, bounds: np.ndarray
) -> tuple[np.ndarray, float]:
    """sklearn's hyper-parameter optimiser with a cap on the iterations: from the last
    hyper-parameters a few steps suffice, and later refits continue from here."""
    result = minimize(
        objective,
        initial,
        method="L-BFGS-B",
        jac=True,
        bounds=bounds,
        options={"maxiter": WARM_HYPER_ITERATIONS},
    )
    return result.x, float(result.fun)


def _model_subset(inputs: np.ndarray, targets: np.ndarray, cap: int) -> np.ndarray:
    """Indices (ascending) of at most ``cap`` observations to fit the GP on: the best quarter,
    the most recent quarter, and a rest spread out by greedy max-min distance from those.

    The best keep the model right where proposals matter, the recent ones keep it current
    (the sample drifts, and the newest frames are near the next proposal), the spread ones keep
    its picture of the whole box. A pure function of the data, so a replay fits the same."""
    n = len(targets)
    if n <= cap:
        return np.arange(n)
    quarter = cap // 4
    keep = np.zeros(n, dtype=bool)
    keep[np.argsort(targets, kind="stable")[:quarter]] = True  # targets are minimised
    keep[n - quarter :] = True
    distance = cdist(inputs, inputs[keep]).min(axis=1)
    while keep.sum() < cap:
        nxt = int(np.argmax(np.where(keep, -1.0, distance)))
        keep[nxt] = True
        distance = np.minimum(distance, np.linalg.norm(inputs - inputs[nxt], axis=1))
    return np.flatnonzero(keep)


def _maximin_subset(points: np.ndarray, n: int) -> list[int]:
    """Greedily pick ``n`` rows, each as far as possible from those already picked."""
    chosen = [0]
    distance = np.linalg.norm(points - points[0], axis=1)
    while len(chosen) < n:
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
    return chosen
