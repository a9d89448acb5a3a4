"""Running the `stedloop` command as a real subprocess, the way a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys


def run_stedloop(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """`stedloop ARGS...` with this interpreter; ``env`` is added to the current environment."""
    return subprocess.run(
        [sys.executable, "-m", "stedloop.cli.main", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
