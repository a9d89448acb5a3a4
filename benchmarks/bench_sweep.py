"""Sweep wall time: the same sweep of simulated sessions in this process (the sequential
benchmark's way), and on a local Ray with 1 and 2 workers; the tables must be identical
except the decision-time columns.

Run: ``python benchmarks/bench_sweep.py [--sweep configs/sweep_example.toml] [--workers 0,1,2]``
(Ray's start, ~10 s on a small machine, is part of each Ray run's time, as it is for a user).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from machine import cpu_name

from stedloop.sweep.cells import SessionJob
from stedloop.sweep.engine import run_sweep
from stedloop.sweep.plan import plan_jobs
from stedloop.sweep.spec import load_sweep
from stedloop.sweep.table import TIME_COLUMNS, table_rows

ROOT = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", type=Path, default=ROOT / "configs" / "sweep_example.toml")
    parser.add_argument("--workers", default="0,1,2", help="0: in this process, without Ray")
    args = parser.parse_args(argv)
    spec = load_sweep(args.sweep)
    print("# bench_sweep")
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"cpu: {cpu_name()}; {os.cpu_count()} logical cores; python {platform.python_version()}")
    jobs = plan_jobs(spec)
    sessions = sum(isinstance(job, SessionJob) for job in jobs)
    print(
        f"sweep {args.sweep.name}: {sessions} sessions of {spec.budget_frames} frames, "
        f"{len(jobs) - sessions} dense-grid jobs ({len(jobs)} jobs)"
    )
    reference = None
    for workers in (int(w) for w in args.workers.split(",")):
        load = os.getloadavg()
        started = time.perf_counter()
        results = run_sweep(spec, workers)
        wall_s = time.perf_counter() - started
        rows = [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in table_rows(results)]
        reference = rows if reference is None else reference
        where = "in this process (no Ray)" if workers == 0 else f"local Ray, {workers} worker(s)"
        print(
            f"  {where:<28} wall {wall_s:7.1f} s   table identical to the first run: "
            f"{rows == reference}   (load average before: {load[0]:.1f})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
