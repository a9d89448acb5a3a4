"""`stedloop demo` end to end: daemon subprocess, a session with live progress, clean stop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_demo_runs_a_session_live_and_cleans_up(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "stedloop.cli.main", "demo", "--budget", "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    frames = re.findall(r"\] frame (\d+) ", out)
    assert frames == ["0", "1", "2", "3"], out
    assert "session finished" in out and "best: frame" in out
    assert "daemon stopped (exit code 0)" in out
    # Without --keep the temporary data folder is gone.
    assert not any(p.name.startswith("stedloop-demo-") for p in tmp_path.iterdir())
