"""From a sweep file to jobs, and from the jobs' results back to the sweep's results."""

from __future__ import annotations

from dataclasses import dataclass

from stedloop.optimize import resolve_score_transform
from stedloop.sweep.cells import GridJob, Job, JobResult, SessionJob, SessionRun
from stedloop.sweep.judge import SCALARISATION, dense_grid
from stedloop.sweep.spec import SweepSpec

#: (objective, sample): one best achievable value
Target = tuple[str, str]
#: (objective, sample, setting): one row of the table
Group = tuple[str, str, str]


@dataclass(frozen=True)
class SweepResults:
    spec: SweepSpec
    best: dict[Target, float]
    #: per group, the sessions in seed order: (seed, run)
    runs: dict[Group, list[tuple[int, SessionRun]]]


def plan_jobs(spec: SweepSpec) -> list[Job]:
    """Sessions first (the long jobs, so that a pool of workers ends evenly), then the dense
    grid in chunks."""
    jobs: list[Job] = []
    for objective in spec.objectives:
        scalarisation = SCALARISATION.get(objective, "")
        for sample in spec.samples:
            for name, setting in spec.settings.items():
                # What a session configured with this objective would run ("auto" resolved).
                settings = resolve_score_transform(setting.optimizer(), scalarisation)
                for seed in spec.seeds:
                    jobs.append(
                        SessionJob(
                            objective,
                            sample,
                            name,
                            settings,
                            setting.space,
                            seed,
                            spec.budget_frames,
                            spec.reps,
                        )
                    )
    points = len(dense_grid(spec.dense_grid))
    for objective in spec.objectives:
        for sample in spec.samples:
            for start in range(0, points, spec.grid_chunk_points):
                stop = min(points, start + spec.grid_chunk_points)
                jobs.append(GridJob(objective, sample, spec.reps, spec.dense_grid, start, stop))
    return jobs


def collect(spec: SweepSpec, jobs: list[Job], results: list[JobResult]) -> SweepResults:
    grid_values: dict[Target, list[float]] = {}
    runs: dict[Group, list[tuple[int, SessionRun]]] = {}
    for job, result in zip(jobs, results, strict=True):
        if isinstance(job, GridJob):
            assert isinstance(result, list)
            grid_values.setdefault((job.objective, job.sample), []).extend(result)
        else:
            assert isinstance(result, SessionRun)
            group = (job.objective, job.sample, job.setting)
            runs.setdefault(group, []).append((job.seed, result))
    best = {target: max(values) for target, values in grid_values.items()}
    return SweepResults(spec, best, runs)
