"""`stedloop worker check`: start the configured driver in a worker process and try it.

The daemon starts its own workers (``driver.in_worker = true``); this command is how a lab
checks that set-up by hand, typically after pointing ``worker.python_executable`` at the
virtual environment where ``specpy`` is installed. The worker itself is started as
``python -m stedloop.worker`` (see docs/worker.md), not through this CLI.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from stedloop.cli.common import ConfigOption, load_cli_config, print_json


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    worker_app = typer.Typer(
        help="The driver worker process (driver.in_worker; see docs/worker.md).",
        no_args_is_help=True,
    )

    @worker_app.command("check")
    def check(
        config: ConfigOption = None,
        json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """Start the configured driver in a worker (worker.python_executable), connect,
        describe, ping, command the safe state, and stop it again."""
        from stedloop.instrument import claim_instrument
        from stedloop.logs import configure_logging
        from stedloop.worker import create_worker_driver

        loaded = load_cli_config(config)
        # Log lines (the worker's start, faults) go to stderr, never into the report.
        configure_logging(loaded.config.logging.level, loaded.config.logging.json_file)
        settings = loaded.config.worker.model_copy(update={"standby": False})
        # A daemon driving the instrument now is not disturbed: refused, naming it.
        claim = claim_instrument(loaded.config, "`stedloop worker check`")
        try:
            driver = create_worker_driver(loaded.config.model_copy(update={"worker": settings}))
            started = time.perf_counter()
            try:
                driver.connect()
                connected_s = time.perf_counter() - started
                description = driver.describe()
                driver.safe_state()
                pong = driver.ping()
                health = driver.health()
            finally:
                driver.close()
        finally:
            claim.release()
        report = {
            "ok": True,
            "driver": description.name,
            "python_executable": driver.settings.python_executable
            and str(driver.settings.python_executable),
            "worker_python": health["python"],
            "worker_pid": health["pid"],
            "transport": driver.settings.transport,
            "start_and_connect_s": round(connected_s, 3),
            "ping_ms": round(pong["round_trip_ms"], 3),
            "safe_state": "commanded",
        }
        if json_out:
            print_json(report)
            return
        typer.echo(
            f"driver worker OK: {report['driver']} in Python {report['worker_python']} "
            f"(pid {report['worker_pid']}, {report['python_executable'] or 'this interpreter'})"
        )
        typer.echo(
            f"started and connected in {report['start_and_connect_s']:.2f} s, ping "
            f"{report['ping_ms']:.2f} ms, lasers commanded safe, worker stopped"
        )

    app.add_typer(worker_app, name="worker")
