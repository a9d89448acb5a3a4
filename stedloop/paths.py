"""Where stedloop keeps its data: ``$STEDLOOP_HOME``, else the config, else the user data folder."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from stedloop.errors import ConfigError


def _locate(configured: Path | None) -> tuple[Path, str]:
    """The data folder and the setting it came from (for messages)."""
    env = os.environ.get("STEDLOOP_HOME")
    if env:
        return Path(env).expanduser(), "$STEDLOOP_HOME"
    if configured is not None:
        return Path(configured).expanduser(), "store.data_dir"
    default = Path(platformdirs.user_data_dir("stedloop", appauthor=False))
    return default, "the user data folder ($STEDLOOP_HOME or store.data_dir changes it)"


def data_dir(configured: Path | None = None) -> Path:
    """The folder holding sessions and keys. ``$STEDLOOP_HOME`` wins over the config.

    It need not exist yet; a file in its place (or an unusable name) is a ``ConfigError``
    naming the setting, so no command gets as far as a traceback from it."""
    root, origin = _locate(configured)
    try:
        is_file = root.exists() and not root.is_dir()
    except OSError as exc:  # e.g. a name too long
        raise ConfigError(f"data folder {root} ({origin}) is unusable: {exc.strerror}") from None
    if is_file:
        raise ConfigError(f"data folder {root} ({origin}) is a file, not a folder")
    return root


def ensure_data_dir(configured: Path | None = None) -> Path:
    """``data_dir()``, created if missing and checked writable. Commands that will write
    sessions, keys or tokens call it first, before they touch a driver or a daemon."""
    root = data_dir(configured)
    _, origin = _locate(configured)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the data folder {root} ({origin}): {exc.strerror}"
        ) from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(f"data folder {root} ({origin}) is not writable")
    return root


def sessions_dir(configured: Path | None = None) -> Path:
    return data_dir(configured) / "sessions"
