"""The `stedloop` command. Each area registers its commands from its own module."""

from __future__ import annotations

import os
import sys

import typer

from stedloop import __version__
from stedloop.cli import (
    config_cmd,
    daemon_cmd,
    demo_cmd,
    doctor_cmd,
    optimize_cmd,
    quality_cmd,
    scoring_cmd,
    simulate_cmd,
    study_cmd,
    sweep_cmd,
    worker_cmd,
)
from stedloop.cli.common import (
    DEBUG_ENV,
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    describe_os_error,
)
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
    scoring_cmd,
    optimize_cmd,
    daemon_cmd,
    demo_cmd,
    doctor_cmd,
    study_cmd,
    sweep_cmd,
    worker_cmd,
):
    module.register(app)


def run() -> None:
    """Entry point: every error ends as one line on stderr and a non-zero exit code.

    User errors (``StedloopError``) and files or folders the system refuses (``OSError``:
    a file where a folder belongs, a name too long, no permission, a full disk) exit 2; any
    other exception is a bug, reported in one line with exit code 3, and with its traceback
    when ``STEDLOOP_DEBUG=1``."""
    try:
        app()  # standalone: usage errors print and exit 2, --help exits 0
    except StedloopError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as exc:
        if _debug():
            raise
        typer.echo(f"error: {describe_os_error(exc)}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except Exception as exc:
        if _debug():
            raise
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {_first_line(exc)} (a bug; rerun with "
            f"{DEBUG_ENV}=1 for the traceback and report it)",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else "(no message)"


if __name__ == "__main__":
    run()
