"""Helpers shared by the command modules: config loading, errors, output."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from stedloop.config import LoadedConfig, load_config

#: Exit codes: 0 all well, 1 a run finished with failures, 2 bad input (usage, config, files,
#: folders), 3 an unexpected error (a bug: rerun with STEDLOOP_DEBUG=1 for the traceback).
EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
#: Set to 1 to let unexpected errors end with their traceback instead of one line.
DEBUG_ENV = "STEDLOOP_DEBUG"

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


def short_path(path: str | os.PathLike[str] | bytes, limit: int = 120) -> str:
    """A path for a one-line message: very long ones (ENAMETOOLONG) keep their two ends."""
    text = os.fsdecode(path)
    return text if len(text) <= limit else f"{text[: limit // 2]}…{text[-limit // 2 :]}"


def describe_os_error(exc: OSError) -> str:
    """``path: reason`` for an error the operating system raised about a file or folder."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason
    where = short_path(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {short_path(exc.filename2)}"
    return f"{where}: {reason}"


def output_folder(path: Path, option: str = "--out") -> Path:
    """Create the folder an output option names, before any work is done; one line and exit
    code 2 when it cannot be one (a file, /dev/null, a name too long, no permission)."""
    shown = short_path(path)
    try:
        if path.exists() and not path.is_dir():
            fail(f"{option} {shown} exists and is not a folder")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create {option} {shown}: {exc.strerror or exc}")
    if not os.access(path, os.W_OK | os.X_OK):
        fail(f"{option} {shown} is not writable")
    return path


def output_file(path: Path, option: str = "--out") -> Path:
    """Check a file an output option names before any work: not a folder, and in a folder
    that exists or can be created (which ``output_folder`` does)."""
    try:
        is_folder = path.is_dir()
    except OSError as exc:  # e.g. a name too long
        fail(f"{option} {short_path(path)}: {exc.strerror or exc}")
    if is_folder:
        fail(f"{option} {short_path(path)} is a folder; name the file to write")
    output_folder(path.parent, f"the folder of {option}")
    return path
