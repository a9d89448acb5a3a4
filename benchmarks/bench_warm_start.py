"""Warm start benchmark on the simulator: frames to 95 % of the best, cold vs warm.

Earlier sessions: cold sessions (the optimizer's defaults, ``--budget`` frames) on other
samples of the actin simulator; their told settings and observed scores are what a new
session reads from their ledgers (``stedloop.session.warm_start``). The new session then runs
on a new sample

* of the same structure (actin, another seed), after 1 and after 3 earlier sessions, and
* of a differing one (``--other-structure``, bleaching ``--bleaching-scale`` x faster, label
  density (brightness) x ``--brightness``), after the same 3 actin sessions,

each against a cold start with the same seed on the same sample. Proposals are judged as in
``bench_optimizer.py`` (the mean objective over fixed reference regions of that sample
type); the best achievable value is the best of a dense grid over the capped box, per sample
type. Reported: the median over seeds of the frames until a proposal reaches 95 % of it
("> budget": not reached), and the per-seed differences warm - cold.

Run: ``python benchmarks/bench_warm_start.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
from bench_optimizer import (
    BOX,
    CAPS,
    FIELD_PX,
    OBJECTIVES,
    REFERENCE_SEED,
    SCALARISATION,
    FrameObjective,
    conditions,
    dense_grid,
    frames_to,
)

from stedloop.config.schema import OptimizerSection
from stedloop.driver import AcquireRequest
from stedloop.drivers.simulator import SimulatorDriver
from stedloop.drivers.simulator.driver import SimulatorOptions
from stedloop.optimize import BayesianOptimizer, SearchSpace, resolve_score_transform
from stedloop.optimize.prior import PRIOR_DESIGN_POINTS, PriorObservation, prior_design
from stedloop.params import ImagingParams
from stedloop.session.regions import RegionTiler

#: Seeds of the earlier sessions' samples (apart from the new samples' seeds and the
#: reference regions').
EARLIER_SEED = 5_000


def make_driver(sample: dict[str, object], seed: int, fields: int) -> SimulatorDriver:
    options = SimulatorOptions(
        seed=seed, sample_fields=fields, field_px=FIELD_PX, include_ground_truth=True, **sample
    )  # type: ignore[arg-type]
    driver = SimulatorDriver(options, CAPS)
    driver.connect()
    return driver


class Expected:
    """Mean objective over fixed fresh reference regions of one sample type."""

    def __init__(self, sample: dict[str, object], reps: int, objective: FrameObjective) -> None:
        self.sample, self.reps, self.objective = sample, reps, objective

    @cache  # noqa: B019 - one instance per sample type, points repeat
    def __call__(self, params: ImagingParams) -> float:
        values = []
        for r in range(self.reps):
            driver = make_driver(self.sample, REFERENCE_SEED + r, 1)
            region = RegionTiler(driver.describe()).take()
            values.append(self.objective(driver.acquire(AcquireRequest(params, region))))
        return float(np.mean(values))


def run_session(
    settings: OptimizerSection,
    sample: dict[str, object],
    seed: int,
    budget: int,
    objective: FrameObjective,
    prior: Sequence[ImagingParams] = (),
    judge: Callable[[ImagingParams], float] | None = None,
    stop_at: float = float("inf"),
) -> tuple[list[PriorObservation], list[float]]:
    """One session: its observations (as a ledger would give them) and the judged values,
    until a judged value reaches ``stop_at`` (all that frames-to-95 % needs)."""
    driver = make_driver(sample, seed, fields=int(np.ceil(np.sqrt(budget))) + 1)
    tiler = RegionTiler(driver.describe())
    optimizer = BayesianOptimizer(SearchSpace(BOX, CAPS), settings, seed, prior_points=prior)
    observed, judged = [], []
    for k in range(budget):
        params = optimizer.ask(k).params
        optimizer.prepare()
        frame = driver.acquire(AcquireRequest(params, tiler.take()))
        score = objective(frame)
        optimizer.tell(frame.params, score)
        observed.append(PriorObservation(f"s{seed}", k, frame.params, score))
        if judge is not None:
            judged.append(judge(params))
            if judged[-1] >= stop_at:
                break
    optimizer.join_background()
    return observed, judged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objective", choices=sorted(OBJECTIVES), default="expert-series")
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--alt-prior-frames", type=int, default=1, help="a variant with this many prior frames"
    )
    parser.add_argument("--budget", type=int, default=30)
    parser.add_argument("--reps", type=int, default=2, help="reference regions per judged point")
    parser.add_argument("--grid", default="8,6,8", help="dense grid: dwell,excitation,depletion")
    parser.add_argument("--other-structure", default="tubulin")
    parser.add_argument("--bleaching-scale", type=float, default=3.0)
    parser.add_argument("--brightness", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="3 seeds, coarse grid, 15 frames")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.grid, args.budget = 3, "5,4,5", 15
    shape = [int(v) for v in args.grid.split(",")]
    objective, description = OBJECTIVES[args.objective]
    settings = resolve_score_transform(OptimizerSection(), SCALARISATION.get(args.objective, ""))
    same: dict[str, object] = {"structure": "actin"}
    other: dict[str, object] = {
        "structure": args.other_structure,
        "photobleaching_scale": args.bleaching_scale,
        "label_density": args.brightness,
    }

    print("# bench_warm_start")
    conditions()
    print(f"objective ({args.objective}): {description}")
    print(
        f"{args.seeds} seeds, budget {args.budget} frames, {args.reps} reference regions per "
        f"judged point; warm start: the first {PRIOR_DESIGN_POINTS} of "
        f"{settings.n_initial_points} warm-up frames at the earlier sessions' best settings"
    )
    print(f"earlier sessions: cold, {args.budget} frames each, on actin samples")
    print(f"new sample, same structure: {same}; differing sample: {other}")
    grid = dense_grid(shape)
    truths, thresholds = {}, {}
    for label, sample in (("same", same), ("differing", other)):
        truth = Expected(sample, args.reps, objective)
        started = time.perf_counter()
        values = [truth(p) for p in grid]
        best = int(np.argmax(values))
        truths[label], thresholds[label] = truth, 0.95 * values[best]
        print(
            f"{label}: best of the {'x'.join(map(str, shape))} grid ({len(grid)} allowed points) "
            f"{values[best]:.4f} at {grid[best].describe()}; 95 %: {thresholds[label]:.4f} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )

    results: dict[str, list[float]] = {}
    started = time.perf_counter()
    alt = args.alt_prior_frames
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        earlier = [
            run_session(settings, same, EARLIER_SEED + 3 * seed + j, args.budget, objective)[0]
            for j in range(3)
        ]
        priors = {
            (n, k): [
                o.params
                for o in prior_design(
                    SearchSpace(BOX, CAPS),
                    settings,
                    [o for session in earlier[:n] for o in session],
                    n_points=k,
                )
            ]
            for n in (1, 3)
            for k in (alt, PRIOR_DESIGN_POINTS)
        }
        k = PRIOR_DESIGN_POINTS
        runs = {
            "same, cold": (same, ()),
            "same, warm from 1": (same, priors[1, k]),
            "same, warm from 3": (same, priors[3, k]),
            f"same, warm from 3, {alt} prior frame{'s' * (alt != 1)}": (same, priors[3, alt]),
            "differing, cold": (other, ()),
            "differing, warm from 3": (other, priors[3, k]),
            f"differing, warm from 3, {alt} prior frame{'s' * (alt != 1)}": (other, priors[3, alt]),
        }
        for name, (sample, prior) in runs.items():
            label = "same" if sample is same else "differing"
            judged = run_session(
                settings,
                sample,
                seed,
                args.budget,
                objective,
                prior,
                truths[label],
                stop_at=thresholds[label],
            )[1]
            reached = frames_to(judged, thresholds[label])
            results.setdefault(name, []).append(float("inf") if reached is None else reached)
        print(
            f"  seed {seed}: "
            + "  ".join(f"{name} {v[-1]:g}" for name, v in results.items())
            + f"  ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )

    print(f"\nframes to 95 % of the best, median over {args.seeds} seeds (inf: not within budget):")
    for name, values in results.items():
        within = sum(v != float("inf") for v in values)
        print(f"  {name:<38} {statistics.median(values):>5g}   ({within}/{len(values)} reached)")
    for cold, warm in (
        ("same, cold", "same, warm from 1"),
        ("same, cold", "same, warm from 3"),
        ("same, cold", f"same, warm from 3, {alt} prior frame{'s' * (alt != 1)}"),
        ("differing, cold", "differing, warm from 3"),
        ("differing, cold", f"differing, warm from 3, {alt} prior frame{'s' * (alt != 1)}"),
    ):
        capped = args.budget + 1  # "not reached" counted as budget + 1 in differences
        diffs = [
            min(w, capped) - min(c, capped)
            for w, c in zip(results[warm], results[cold], strict=True)
        ]
        print(
            f"  {warm} - {cold}: median difference {statistics.median(diffs):+g} frames "
            f"(per seed: {' '.join(f'{d:+g}' for d in diffs)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
