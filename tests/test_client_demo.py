"""`stedloop demo` end to end: daemon subprocess, a session with live progress, clean stop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

STEDLOOP = [sys.executable, "-m", "stedloop.cli.main"]


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
    # Without --keep the temporary data folder is gone, and the demo says how to keep it.
    assert not any(p.name.startswith("stedloop-demo-") for p in tmp_path.iterdir())
    assert "`stedloop demo --keep`" in out and "stedloop session ls" in out


def test_demo_keeps_its_session_and_says_what_to_try_next(tmp_path: Path) -> None:
    """A new user's way on from the demo: where its session is, the commands that show and
    export it (which work as printed), and the commands for a session of their own."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "stedloop.cli.main", "demo", "--budget", "2", "--keep"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    shown = re.search(r"  STEDLOOP_HOME=(\S+) stedloop session show (\S+)", out)
    assert shown, out
    home, session_id = Path(shown.group(1)), shown.group(2)
    assert (home / "sessions" / session_id / "ledger.sqlite").is_file()
    for command in ("stedloop optimize --driver simulator", "stedloop session ls"):
        assert command in out
    assert f"stedloop session export {session_id} --out" in out
    # The printed command works as printed.
    exported = subprocess.run(
        [*STEDLOOP, "session", "export", session_id, "--out", str(tmp_path / "export")],
        env={**env, "STEDLOOP_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "export" / "frames.csv").is_file()
