"""`stedloop demo`: a daemon on the simulator, one optimisation session, live progress.

The daemon runs as a child process on free loopback ports with its data in a temporary
folder (removed afterwards unless ``--keep``), so the demo never touches the user's data
directory or a daemon that is already running (``stedloop.client.local_daemon``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

#: Used when the shipped quality model is missing: objectives that need no network.
FALLBACK_OBJECTIVES = ["resolution", "signal_ratio"]


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        budget: Annotated[int, typer.Option("--budget", help="Frames to take.")] = 20,
        keep: Annotated[
            bool, typer.Option("--keep", help="Keep the demo's data folder afterwards.")
        ] = False,
    ) -> None:
        """Start a daemon on the simulator, run a session with live progress, stop it."""
        raise typer.Exit(run_demo(budget_frames=budget, keep=keep))


def run_demo(budget_frames: int = 20, keep: bool = False) -> int:
    from stedloop.cli.daemon_cmd import describe_event, final_state
    from stedloop.client import Client
    from stedloop.client.local_daemon import READY_TIMEOUT_S, start_daemon, stop_daemon
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
            result = client.call_when_ready(
                "session.start",
                READY_TIMEOUT_S,
                budget_frames=budget_frames,
                objectives=objectives,
                name="demo",
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
