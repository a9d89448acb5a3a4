"""`stedloop sweep SWEEP.toml`: a grid of simulated sessions (seeds x optimizer settings x
objectives x samples), on a local Ray by default, on a Ray cluster with ``--address``, or in
this process with ``--workers 0``; one table (CSV and printed), the frames and the plots.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import typer

from stedloop.cli.common import fail, output_folder


def register(app: typer.Typer) -> None:
    """Add `sweep` to the main app."""

    @app.command("sweep")
    def sweep(
        sweep_file: Path = typer.Argument(
            ..., metavar="SWEEP.toml", help="The sweep file (docs/sweep.md)."
        ),
        workers: int | None = typer.Option(
            None,
            "--workers",
            help="Jobs at a time on a local Ray (its CPUs; default: this machine's cores); "
            "0 runs them one after another in this process, without Ray.",
            show_default=False,
        ),
        sequential: bool = typer.Option(
            False, "--sequential", help="The same as --workers 0: no Ray."
        ),
        address: str | None = typer.Option(
            None,
            "--address",
            help="A running Ray cluster: auto (the one on this machine) or ray://HOST:10001. "
            "Every node needs stedloop installed.",
        ),
        out: Path | None = typer.Option(
            None,
            "--out",
            help="Folder for sweep.csv, sweep_frames.csv and the plots (default: "
            "<SWEEP>-results beside the sweep file).",
            show_default=False,
        ),
    ) -> None:
        """Run a sweep of simulated sessions and write its table and plots.

        The results (everything but the decision-time columns) are the same in this process
        and on Ray, for any number of workers.
        """
        from stedloop.sweep.engine import require_ray, run_sweep
        from stedloop.sweep.plan import plan_jobs
        from stedloop.sweep.plots import write_plots
        from stedloop.sweep.spec import load_sweep
        from stedloop.sweep.table import format_table, table_rows, write_tables

        if sequential and workers not in (None, 0):
            fail(f"--sequential runs without Ray; drop --workers {workers}")
        if sequential:
            workers = 0
        if workers is None:
            if importlib.util.find_spec("ray") is None and address is None:
                typer.echo(
                    "note: Ray is not installed, so the sweep runs in this process "
                    "(pip install 'stedloop[ray]' for workers)",
                    err=True,
                )
                workers = 0
            else:
                workers = os.cpu_count() or 1
        if workers < 0:
            fail(f"--workers must be 0 (no Ray) or more, got {workers}")
        if address is not None and workers == 0:
            fail("--address runs the sweep on a Ray cluster; drop --workers 0/--sequential")
        spec = load_sweep(sweep_file)
        if workers > 0:
            require_ray()  # before any output: without the extra, say so in one line
        folder = output_folder(out or sweep_file.with_name(f"{sweep_file.stem}-results"))

        from stedloop.cli.progress import CommandProgress

        jobs = len(plan_jobs(spec))
        where = (
            "in this process"
            if workers == 0
            else f"on the Ray cluster at {address}"
            if address
            else f"on a local Ray with {workers} worker(s)"
        )
        typer.echo(f"sweep {spec.name!r}: {jobs} jobs {where}", err=True)
        started = time.perf_counter()
        with CommandProgress("sweep", jobs, "jobs") as bar:
            results = run_sweep(spec, workers, address, lambda done, _total: bar.update(done))
        wall_s = time.perf_counter() - started
        rows = table_rows(results)
        table, frames = write_tables(results, folder)
        plots = write_plots(results, folder)
        typer.echo(format_table(rows))
        names = ", ".join(p.name for p in (frames, *plots))
        typer.echo(f"\n{jobs} jobs in {wall_s:.1f} s; wrote {table} (and {names})", err=True)
