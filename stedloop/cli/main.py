"""The `stedloop` command. Each area registers its commands from its own module."""

from __future__ import annotations

import sys

import typer

from stedloop import __version__
from stedloop.cli import (
    config_cmd,
    daemon_cmd,
    doctor_cmd,
    optimize_cmd,
    quality_cmd,
    simulate_cmd,
    study_cmd,
    worker_cmd,
)
from stedloop.cli.common import EXIT_BAD_INPUT
from stedloop.errors import StedloopError

app = typer.Typer(
    name="stedloop",
    help="A STED microscope that tunes itself: score frames, optimise imaging parameters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stedloop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """stedloop: a STED microscope that tunes itself."""


for module in (
    config_cmd,
    simulate_cmd,
    quality_cmd,
    optimize_cmd,
    daemon_cmd,
    doctor_cmd,
    study_cmd,
    worker_cmd,
):
    module.register(app)


def run() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()  # standalone: usage errors print and exit 2, --help exits 0
    except StedloopError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    run()
