"""`stedloop worker check` against a real worker process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _run(tmp_path: Path, site: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "site.toml"
    config.write_text(site)
    env = {**os.environ, "STEDLOOP_CONFIG": str(config), "STEDLOOP_LOG_FORMAT": "json"}
    return subprocess.run(
        [sys.executable, "-m", "stedloop.cli.main", "worker", "check", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_worker_check_starts_the_configured_driver_in_the_given_python(tmp_path: Path) -> None:
    site = (
        f'[worker]\npython_executable = "{sys.executable}"\n'
        "[drivers.simulator]\nsample_fields = 2\n"
    )
    result = _run(tmp_path, site, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["driver"] == "simulator" and report["safe_state"] == "commanded"
    assert report["worker_python"] == sys.version.split()[0]
    assert report["python_executable"] == sys.executable


def test_worker_check_reports_a_missing_interpreter_in_one_line(tmp_path: Path) -> None:
    result = _run(tmp_path, f'[worker]\npython_executable = "{tmp_path / "nope"}"\n')
    assert result.returncode == 2
    assert "error: cannot start the driver worker" in result.stderr
    assert "worker.python_executable" in result.stderr
