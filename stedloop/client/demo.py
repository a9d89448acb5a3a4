"""`stedloop demo`: a daemon on the simulator, one optimisation session, live progress.

The daemon runs as a child process on free loopback ports with its data in a temporary
folder (removed afterwards unless ``--keep``), so the demo never touches the user's data
directory or a daemon that is already running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

#: Used when the shipped quality model is missing: objectives that need no network.
FALLBACK_OBJECTIVES = ["resolution", "signal_ratio"]
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


def run_demo(budget_frames: int = 20, keep: bool = False) -> int:
    from stedloop.cli.daemon_cmd import describe_event, final_state, start_with_retry
    from stedloop.client import Client
    from stedloop.quality import shipped_model_path

    home = Path(tempfile.mkdtemp(prefix="stedloop-demo-"))
    model = shipped_model_path()
    if model.is_file():
        objectives = ["quality"]
        typer.echo(f"quality model: {model}")
    else:
        objectives = FALLBACK_OBJECTIVES
        typer.echo(
            f"notice: the shipped quality model is missing ({model}); this demo optimises "
            f"{' + '.join(objectives)} instead of the network's quality score"
        )
    typer.echo(
        f"demo data: {home} ({'kept afterwards' if keep else 'temporary, removed at the end; --keep keeps it'})"
    )
    typer.echo("starting the daemon on the simulator ...")
    process, ready = start_daemon(home)
    code = 0
    try:
        with Client(ready["request_address"], timeout_s=10.0) as client:
            typer.echo(f"daemon ready at {ready['request_address']} (pid {ready['pid']})")
            result = start_with_retry(
                client,
                {"budget_frames": budget_frames, "objectives": objectives, "name": "demo"},
                timeout_s=READY_TIMEOUT_S,
            )
            session_id = result["session_id"]
            typer.echo(f"session {session_id}: {budget_frames} frames, live progress:")
            started = time.monotonic()
            try:
                for event in client.follow(
                    ready["event_address"], since_seq=result.get("since_seq", 0)
                ):
                    if event.get("session_id") not in (session_id, None):
                        continue
                    typer.echo(f"[{time.monotonic() - started:5.1f} s] {describe_event(event)}")
                    state = final_state(event)
                    if state is not None:
                        code = 1 if state == "failed" else 0
                        break
            except KeyboardInterrupt:
                typer.echo("interrupted: stopping the session")
                client.call("session.stop", session_id=session_id, token=result["token"])
                code = 130
            summary = client.call("session.get", session_id=session_id)
            best = summary.get("best")
            if best:
                params = ", ".join(f"{k}={v:.4g}" for k, v in best["params"].items())
                typer.echo(f"best: frame {best['frame']} score {best['combined']:.3g} ({params})")
    finally:
        exit_code = stop_daemon(process)
        typer.echo(f"daemon stopped (exit code {exit_code})")
        if exit_code != 0:
            # The data folder (and its log) is about to go: show why the daemon failed.
            log_tail = (home / "daemon.log").read_text(errors="replace").splitlines()[-30:]
            typer.echo("last lines of the daemon log:\n  " + "\n  ".join(log_tail), err=True)
        if keep:
            typer.echo(f"data kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    return code
