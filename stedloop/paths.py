"""Where stedloop keeps its data: ``$STEDLOOP_HOME``, else the config, else the user data folder."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def data_dir(configured: Path | None = None) -> Path:
    """The folder holding sessions and keys. ``$STEDLOOP_HOME`` wins over the config."""
    env = os.environ.get("STEDLOOP_HOME")
    if env:
        return Path(env).expanduser()
    if configured is not None:
        return Path(configured).expanduser()
    return Path(platformdirs.user_data_dir("stedloop", appauthor=False))


def sessions_dir(configured: Path | None = None) -> Path:
    return data_dir(configured) / "sessions"
