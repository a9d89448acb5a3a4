"""Helpers shared by the command modules: config loading, errors, output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from stedloop.config import LoadedConfig, load_config

#: Exit codes: 0 all well, 1 a run finished with failures, 2 bad input (usage, config, files).
EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_BAD_INPUT = 2

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Site config file (TOML) merged over the defaults. Also $STEDLOOP_CONFIG.",
        show_default=False,
    ),
]


def load_cli_config(
    config_path: Path | None, overrides: dict[str, Any] | None = None
) -> LoadedConfig:
    return load_config(config_path, overrides=overrides)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print a one-line error to stderr and exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def say_prefix_expanded(asked: str, session_id: str) -> None:
    """Tell (on stderr, so --json output stays clean) that a prefix stood for a session."""
    if asked != session_id:
        typer.echo(f"note: {asked!r} is a prefix of session {session_id}; using it", err=True)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()
