"""Running a sweep's jobs: in this process one after another, or as Ray tasks.

Ray is optional (``pip install 'stedloop[ray]'``) and imported only when asked for. Locally
Ray starts with ``workers`` CPUs (one job per CPU at a time), no dashboard and a small object
store (results are a few floats); with ``address`` it joins a running cluster (``auto``: the
one on this machine; ``ray://host:10001``: a remote one through Ray Client), where every
node needs stedloop installed. Results come back in the order of the jobs, whatever the
order they finish in, so the table does not depend on the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from stedloop.errors import ConfigError
from stedloop.sweep.cells import Job, JobResult, run_job
from stedloop.sweep.plan import SweepResults, collect, plan_jobs
from stedloop.sweep.spec import SweepSpec

#: The local Ray object store: results are small; Ray's default takes 30 % of the memory.
LOCAL_OBJECT_STORE_BYTES = 100 * 1024 * 1024

Progress = Callable[[int, int], None]
Item = TypeVar("Item")
Result = TypeVar("Result")


def run_sweep(
    spec: SweepSpec,
    workers: int,
    address: str | None = None,
    progress: Progress | None = None,
) -> SweepResults:
    """Plan the sweep's jobs, run them, and gather their results."""
    jobs = plan_jobs(spec)
    return collect(spec, jobs, run_jobs(jobs, workers, address, progress))


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    address: str | None = None,
    progress: Progress | None = None,
) -> list[JobResult]:
    """Every job's result, in job order. ``workers = 0``: in this process, without Ray."""
    return map_in_order(run_job, jobs, workers, address, progress)


def map_in_order(
    function: Callable[[Item], Result],
    items: Sequence[Item],
    workers: int,
    address: str | None = None,
    progress: Progress | None = None,
    purpose: str = "sweeps on Ray",
) -> list[Result]:
    """``function`` of every item, in item order: in this process (``workers = 0``, no Ray)
    or as Ray tasks of one CPU each. ``function`` must be importable where the tasks run."""
    if workers < 0:
        raise ConfigError(f"--workers must be 0 (no Ray) or more, got {workers}")
    if workers == 0:
        if address is not None:
            raise ConfigError("--address needs Ray: give --workers 1 or more, not 0")
        return _sequential(function, items, progress)
    return _on_ray(function, items, workers, address, progress, purpose)


def _sequential(
    function: Callable[[Item], Result], items: Sequence[Item], progress: Progress | None
) -> list[Result]:
    results = []
    for done, item in enumerate(items, start=1):
        results.append(function(item))
        if progress is not None:
            progress(done, len(items))
    return results


def require_ray(purpose: str = "sweeps on Ray") -> Any:
    """The ``ray`` module, or a one-line ``ConfigError`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            f"{purpose} need the optional extra: pip install 'stedloop[ray]' "
            "(or run them in this process with --workers 0)"
        ) from None
    return ray


def _on_ray(
    function: Callable[[Item], Result],
    items: Sequence[Item],
    workers: int,
    address: str | None,
    progress: Progress | None,
    purpose: str,
) -> list[Result]:
    ray = require_ray(purpose)
    started_here = not ray.is_initialized()
    if started_here:
        if address is None:
            ray.init(
                num_cpus=workers,
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                log_to_driver=False,
            )
        else:
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"cannot join the Ray cluster at {address}: {exc}") from None
    try:
        # One CPU per job: Ray also sets OMP_NUM_THREADS=1 in its workers.
        remote = ray.remote(num_cpus=1, max_retries=0)(function)
        pending = {remote.remote(item): index for index, item in enumerate(items)}
        results: list[Any] = [None] * len(items)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                results[pending.pop(ref)] = ray.get(ref)
            if progress is not None:
                progress(len(items) - len(pending), len(items))
        return results
    finally:
        if started_here:
            ray.shutdown()
