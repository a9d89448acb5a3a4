"""`stedloop demo`: a daemon on the simulator, one optimisation session, live progress.

The daemon runs as a child process on free loopback ports with its data in a temporary
folder (removed afterwards unless ``--keep``), so the demo never touches the user's data
directory or a daemon that is already running (``stedloop.client.local_daemon``).
"""

from __future__ import annotations

import shutil
import sys
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
    session_id: str | None = None
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
            session_id = str(result["session_id"])
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
    typer.echo(next_steps(home, session_id, keep))
    return code


def _own_sessions_folder() -> str:
    """Where the user's own sessions go (the configured data folder, or $STEDLOOP_HOME)."""
    from stedloop.config import load_config
    from stedloop.errors import StedloopError
    from stedloop.paths import sessions_dir

    try:
        return str(sessions_dir(load_config().config.store.data_dir))
    except (StedloopError, OSError):  # a broken site config is `stedloop config validate`'s
        return "your data folder, or $STEDLOOP_HOME/sessions"


def next_steps(home: Path, session_id: str | None, kept: bool) -> str:
    """What to try after the demo: the demo's own session (when kept) and one's own."""
    lines = [""]
    if session_id is not None and kept:
        lines += [
            f"The demo's session {session_id} is in {home / 'sessions' / session_id}; look at it:",
            f"  STEDLOOP_HOME={home} stedloop session show {session_id}",
            f"  STEDLOOP_HOME={home} stedloop session export {session_id} --out demo-export/",
        ]
    elif session_id is not None:
        lines.append(
            f"The demo's session {session_id} was in a temporary folder, now removed; "
            "`stedloop demo --keep` (make demo DEMO_ARGS=--keep) keeps it."
        )
    if shutil.which("stedloop") is None:
        activate = Path(sys.executable).parent / "activate"
        how = f"source {activate}" if activate.is_file() else f"add {activate.parent} to PATH"
        lines.append(f"`stedloop` is not on your PATH here: run `{how}` first.")
    lines += [
        f"Next, your own session on the simulator (kept in {_own_sessions_folder()}):",
        "  stedloop optimize --driver simulator --budget 30   # the loop in your terminal",
        "  stedloop session ls                                # newest first: copy its ID",
        "  stedloop session show ID                           # best settings, Pareto front",
        "  stedloop session export ID --out my-export/        # CSV of every frame, plots",
        "  stedloop config show                               # every setting; -c site.toml to change them",
        "  stedloop serve   then   stedloop start --budget 30 --watch   # as the daemon, from another terminal",
    ]
    return "\n".join(lines)
