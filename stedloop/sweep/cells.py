"""One job of a sweep: a simulated session, or a chunk of the dense grid that gives the best
achievable value. A job is a small frozen dataclass (it travels to a Ray worker by pickling)
and its result depends on nothing but its fields.

A simulated session runs the optimizer on its own simulated sample (a fresh region per frame,
real photon noise) and learns from the noisy per-frame objective; each proposal is judged by
its expected value (``judge.ExpectedObjective``). Decision time is the optimizer's own
compute between a frame's score and the next proposal: tell + ask (ask alone for frame 0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from stedloop.config.schema import OptimizerSection
from stedloop.driver import AcquireRequest
from stedloop.optimize import BayesianOptimizer, SearchSpace
from stedloop.params import ParamSpace
from stedloop.session.regions import RegionTiler
from stedloop.sweep.judge import (
    CAPS,
    ExpectedObjective,
    SpaceName,
    dense_grid,
    search_space,
    shared_judge,
    simulator,
)


@dataclass(frozen=True)
class SessionRun:
    """Per frame (from 0): the proposal's expected value, the noisy objective the optimizer
    was told, and the decision time in seconds."""

    judged: list[float]
    observed: list[float]
    decision_s: list[float]


def simulate_session(
    settings: OptimizerSection,
    space: ParamSpace,
    seed: int,
    budget: int,
    truth: ExpectedObjective,
) -> SessionRun:
    """One session of ``budget`` frames on the sample ``seed`` (the optimizer's seed too)."""
    driver = simulator(seed, int(np.ceil(np.sqrt(budget))) + 1, truth.structure)
    tiler = RegionTiler(driver.describe())
    optimizer = BayesianOptimizer(SearchSpace(space, CAPS), settings, seed)
    judged: list[float] = []
    observed: list[float] = []
    decision_s: list[float] = []
    tell_s = 0.0
    try:
        for k in range(budget):
            started = time.perf_counter()
            params = optimizer.ask(k).params
            decision_s.append(tell_s + time.perf_counter() - started)
            optimizer.prepare()  # the background fit overlaps the acquisition, as in a session
            value = truth.objective(driver.acquire(AcquireRequest(params, tiler.take())))
            started = time.perf_counter()
            optimizer.tell(params, value)
            tell_s = time.perf_counter() - started
            observed.append(value)
            judged.append(truth(params))
    finally:
        optimizer.join_background()
    return SessionRun(judged, observed, decision_s)


def run_ours(
    settings: OptimizerSection, space: ParamSpace, seed: int, budget: int, truth: ExpectedObjective
) -> list[float]:
    """The expected value of each frame's proposal in one simulated session."""
    return simulate_session(settings, space, seed, budget, truth).judged


@dataclass(frozen=True)
class SessionJob:
    """One cell of the grid: objective x sample x optimizer setting x seed."""

    objective: str
    sample: str
    setting: str
    settings: OptimizerSection  # "auto" already resolved for the objective
    space: SpaceName
    seed: int
    budget: int
    reps: int


@dataclass(frozen=True)
class GridJob:
    """Points ``start:stop`` of the dense grid of ``shape``, judged for one objective and
    sample (the best achievable value is the maximum over all chunks)."""

    objective: str
    sample: str
    reps: int
    shape: tuple[int, int, int]
    start: int
    stop: int


Job = SessionJob | GridJob
JobResult = SessionRun | list[float]


def run_job(job: Job) -> JobResult:
    """Run one job in this process, with one BLAS thread (the same in every engine: numbers
    must not depend on where a job runs, and the cores are the engine's to share)."""
    with threadpool_limits(limits=1):
        truth = shared_judge(job.objective, job.sample, job.reps)
        if isinstance(job, GridJob):
            return [truth(p) for p in dense_grid(job.shape)[job.start : job.stop]]
        return simulate_session(job.settings, search_space(job.space), job.seed, job.budget, truth)
