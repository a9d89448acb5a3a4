"""A daemon of one's own: `stedloop serve` as a child process on free loopback ports.

``start_daemon`` runs it with its data under a given folder and waits for its ready file;
``stop_daemon`` stops it cleanly. `stedloop demo`, the tests and the benchmarks use it, so
none of them touches the user's data folder or a daemon that is already running. The daemon
is a separate program here (a subprocess), not an import: the client never imports the
server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 120.0


def start_daemon(
    home: Path, extra_env: dict[str, str] | None = None, log_path: Path | None = None
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Run `stedloop serve` on free loopback ports with data under ``home``; wait until it is
    ready and return (process, the addresses it wrote to its ready file)."""
    ready_file = home / "daemon-ready.json"
    ready_file.unlink(missing_ok=True)
    env = {
        **os.environ,
        "STEDLOOP_HOME": str(home),
        "STEDLOOP_DAEMON__REQUEST_ADDRESS": "tcp://127.0.0.1:*",
        "STEDLOOP_DAEMON__EVENT_ADDRESS": "tcp://127.0.0.1:*",
        "STEDLOOP_LOG_FORMAT": "json",
        **(extra_env or {}),
    }
    log_handle = open(log_path or home / "daemon.log", "ab")  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(
        [sys.executable, "-m", "stedloop.cli.main", "serve", "--ready-file", str(ready_file)],
        env=env,
        stdout=log_handle,
        stderr=subprocess.STDOUT,
    )
    log_handle.close()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready_file.exists():
        if process.poll() is not None:
            raise RuntimeError(
                f"the daemon exited with code {process.returncode} before it was ready; "
                f"see {log_path or home / 'daemon.log'}"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the daemon was not ready within {READY_TIMEOUT_S:g} s")
        time.sleep(0.05)
    return process, json.loads(ready_file.read_text())


def stop_daemon(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM (a clean stop: safe state, ledger flushed); kill only if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)
