"""`stedloop optimize` (a session in the foreground) and `stedloop session ls|show|export`."""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from stedloop.cli.common import (
    EXIT_FAILURES,
    ConfigOption,
    fail,
    load_cli_config,
    output_folder,
    print_json,
    say_prefix_expanded,
)

if TYPE_CHECKING:  # the session, the drivers and the store load numpy and more: only when run
    from stedloop.config import LoadedConfig
    from stedloop.config.schema import StedloopConfig
    from stedloop.events import SessionEvent
    from stedloop.instrument import OpenDriver
    from stedloop.session.runner import Session, SessionSummary
    from stedloop.store.session_store import SessionStore


def _overrides(
    driver: str | None, budget: int | None, objectives: list[str] | None, seed: int | None
) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if driver:
        overrides["driver"] = {"name": driver}
    if budget is not None:
        overrides["session"] = {"budget_frames": budget}
    if objectives:
        overrides["objectives"] = {"names": list(objectives)}
    if seed is not None:
        overrides["optimizer"] = {"random_seed": seed}
    return overrides


def _frame_list(frames: list[int]) -> str:
    """Frame numbers, consecutive runs shortened (0-4, 7, 9-10); "none" when empty."""
    if not frames:
        return "none"
    runs: list[list[int]] = []
    for n in frames:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


def _format_params(params: dict[str, float]) -> str:
    return (
        f"dwell {params['dwell_time_us']:6.2f} µs  exc {params['excitation_uw']:5.2f} µW  "
        f"dep {params['depletion_mw']:6.1f} mW"
    )


def describe_warm_start(warm: dict[str, Any]) -> str:
    """A ``warm_start`` event's data as lines: the sessions read and where each prior frame's
    setting came from."""
    how = "auto: most recent comparable" if warm.get("auto") else "named"
    lines = [
        f"  warm start ({how}): {warm.get('observations', 0)} scored frames of "
        f"{', '.join(warm.get('sessions') or []) or 'no session'}"
    ]
    for frame, point in enumerate(warm.get("prior_points") or []):
        lines.append(
            f"    frame {frame:>3} prior: {_format_params(point['params'])}  from session "
            f"{point['session']} frame {point['frame']} (score {_format_score(point['score'])})"
        )
    if not warm.get("prior_points"):
        lines.append("    (none of their settings lies within today's space and caps)")
    return "\n".join(lines)


def _format_score(value: float | None) -> str:
    return "  —  " if value is None or not math.isfinite(value) else f"{value:.3f}"


class _Progress:
    """Prints one line per frame and session/log events; JSON lines with ``as_json``."""

    def __init__(self, as_json: bool) -> None:
        from rich.console import Console

        self.as_json = as_json
        self.console = Console(highlight=False, soft_wrap=True)
        self._lock = threading.Lock()
        self.session_id: str | None = None
        # On a terminal, a bar with the time left stays under the frame lines; in a log or a
        # pipe (and with --json) there are only the lines.
        self._bar: Any = None
        self._task: Any = None

    def _start_bar(self, budget_frames: int, frames_done: int) -> None:
        if self.as_json or not self.console.is_terminal or self._bar is not None:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("frames"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task("frames", total=budget_frames, completed=frames_done)

    def stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __call__(self, event: SessionEvent) -> None:
        from stedloop import events as ev

        if event.topic is None:  # ledger-only steps (proposed, acquired, ...): not shown
            return
        with self._lock:
            if self.as_json:
                # `kind` is the topic (session | frame | log, and summary at the end) as
                # before typed events; `event` is the event's own kind.
                line = {**event.to_wire(), "kind": event.topic, "event": event.kind}
                print_json({**line, "session": self.session_id})
                return
            if isinstance(event, ev.FrameOutcome):
                if self._bar is not None:
                    self._bar.update(self._task, completed=event.frames_done)
                values = "  ".join(
                    f"{name} {_format_score(value)}" for name, value in event.values.items()
                )
                status = "" if isinstance(event, ev.Told) else "  [red]failed[/red]"
                self.console.print(
                    f"frame {event.frame:>3} ({event.frames_done}/{event.budget_frames} done)  "
                    f"{_format_params(event.params) if event.params else ''}  {values}  "
                    f"score {_format_score(event.combined)}  "
                    f"[bold]best {_format_score(event.best_score)}[/bold]{status}"
                )
            elif isinstance(event, (ev.Opened, ev.Paused, ev.Resumed, ev.Ended)):
                state = event.state
                reason = f": {event.reason}" if isinstance(event, ev.Ended) and event.reason else ""
                if isinstance(event, ev.Ended):
                    self.stop_bar()
                self.console.print(f"[cyan]session {self.session_id} {state}{reason}[/cyan]")
                if isinstance(event, ev.Opened) and event.budget_frames:
                    self._start_bar(event.budget_frames, event.frames_done or 0)
            elif isinstance(event, ev.Log) and event.level in ("warning", "error"):
                self.console.print(f"[yellow]{event.level}: {event.message}[/yellow]")

    def log(self, level: str, message: str) -> None:
        from stedloop.events import Log

        self(Log(level=level, message=message))


def _run_in_foreground(session: Session, progress: _Progress) -> SessionSummary:
    """Run the session in a thread; Ctrl-C stops after the frame, twice aborts it."""
    from stedloop.session import SessionControl

    control = SessionControl()
    result: dict[str, Any] = {}

    done = threading.Event()

    def target() -> None:
        try:
            result["summary"] = session.run(control, progress)
        except BaseException as exc:  # surfaced in the main thread below
            result["error"] = exc
        finally:
            done.set()

    # A job a shell script starts in the background inherits SIGINT as ignored, and Python
    # keeps it so: `kill -INT` would then not stop the session. Ctrl-C always means stop.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if in_main_thread else None
    thread = threading.Thread(target=target, name="stedloop-session", daemon=True)
    thread.start()
    interrupts = 0
    # Wait on an Event, not Thread.join: a KeyboardInterrupt inside join() can leave the
    # thread looking finished while it still runs (seen here with CPython 3.11).
    while not done.is_set():
        try:
            done.wait(timeout=0.2)
        except KeyboardInterrupt:
            interrupts += 1
            if interrupts == 1:
                progress.console.print(
                    "[yellow]stopping after this frame (Ctrl-C again to abort it)[/yellow]"
                )
                control.request_stop()
            else:
                progress.console.print("[yellow]aborting the frame in flight[/yellow]")
                control.request_stop(abort=True)
    thread.join()
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
    if "error" in result:
        raise result["error"]
    summary: SessionSummary = result["summary"]
    return summary


def _report_end(summary: SessionSummary, progress: _Progress, as_json: bool) -> None:
    progress.stop_bar()
    """The summary, how to go on where going on makes sense, and exit code 1 (EXIT_FAILURES)
    when the session failed or not one of its frames could be scored."""
    none_scored = summary.best_score is None and summary.frames > 0
    failed = summary.state == "failed" or none_scored
    if as_json:
        print_json({"kind": "summary", **summary.as_dict()})
    else:
        best = summary.best_params
        progress.console.print(
            ("" if failed else f"{summary.state}: {summary.stop_reason}; ")  # failed: on stderr
            + f"{summary.frames} frames; best score {_format_score(summary.best_score)}"
            + (f" at {_format_params(best)}" if best else "")
        )
        if summary.state == "stopped":
            progress.console.print(f"resume with: stedloop optimize --resume {summary.id}")
        elif summary.state == "finished" and not none_scored:
            progress.console.print(
                f"more frames: stedloop optimize --resume {summary.id} --budget N "
                f"(N > {summary.frames})"
            )
    if failed:
        reason = (
            summary.stop_reason
            if summary.state == "failed"
            else f"none of its {summary.frames} frames could be scored"
        )
        typer.echo(f"error: session {summary.id} failed: {reason}", err=True)
        raise typer.Exit(EXIT_FAILURES)


def register(app: typer.Typer) -> None:
    @app.command("optimize")
    def optimize(
        config: ConfigOption = None,
        driver: str | None = typer.Option(
            None, "--driver", help="Driver plugin (e.g. simulator); default from config."
        ),
        budget: int | None = typer.Option(None, "--budget", min=1, help="Frames to take."),
        objective: list[str] | None = typer.Option(
            None, "--objective", help="Objective plugin; repeat for several (default: config)."
        ),
        seed: int | None = typer.Option(None, "--seed", help="Optimizer seed (reproducible)."),
        resume: str | None = typer.Option(
            None, "--resume", help="Continue this session (id or unique prefix) from its ledger."
        ),
        force: bool = typer.Option(
            False, "--force", help="Resume even if the config differs from the session's."
        ),
        name: str | None = typer.Option(None, "--name", help="A label for the new session."),
        warm_start: list[str] | None = typer.Option(
            None,
            "--warm-start",
            help="Start from what these earlier sessions learned (ids or unique prefixes; "
            "repeat or separate by commas), or 'auto': the most recent comparable ones (same "
            "driver, structure, space and objectives).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print events as JSON lines."),
        share_driver: bool = typer.Option(
            False,
            "--share-driver",
            help="Run even if another stedloop process (a daemon, another optimize) drives "
            "this driver from the same data folder; only for drivers that may be shared.",
        ),
    ) -> None:
        """Run an optimisation session in the foreground with live progress.

        Each frame: propose parameters, image a fresh region, score, record, learn. Ctrl-C
        stops after the frame in flight (twice: aborts it); the lasers end in the safe state
        and the ledger keeps every recorded frame, so `--resume` can continue."""
        from stedloop.paths import ensure_data_dir
        from stedloop.store import SessionStore

        if resume and seed is not None:
            fail("--seed cannot be combined with --resume: a session keeps its own seed")
        if resume and warm_start:
            fail(
                "--warm-start cannot be combined with --resume: a session keeps its own warm start"
            )
        cli_overrides = _overrides(driver, budget, objective, seed) or None
        loaded = load_cli_config(config, cli_overrides)
        ensure_data_dir(loaded.config.store.data_dir)  # before the driver: one line if unusable
        store = SessionStore.from_config(loaded.config)
        progress = _Progress(as_json)
        if resume and config is None:
            # Without a new config file, a resume continues with the session's own parameter
            # space, objectives, optimizer and budget, inside today's site settings and caps.
            loaded = _resume_config(store, resume, cli_overrides, force, progress)
        try:
            summary = _run_session(
                loaded,
                store,
                resume,
                force,
                name,
                as_json,
                progress,
                share_driver,
                warm_start or [],
            )
        finally:
            progress.stop_bar()  # an error's message must not land under a live bar
        _report_end(summary, progress, as_json)

    session_app = typer.Typer(
        help="List, show and export optimisation sessions.", no_args_is_help=True
    )
    app.add_typer(session_app, name="session")

    @session_app.command("ls")
    def session_ls(
        config: ConfigOption = None,
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """List stored sessions, newest first."""
        from stedloop.store import SessionStore

        store = SessionStore.from_config(load_cli_config(config).config)
        infos = store.newest_first()
        if as_json:
            print_json([i.as_dict() for i in infos])
            return
        if not infos:
            typer.echo(f"no sessions in {store.root}")
            return
        for info in infos:
            if info.reason is not None:  # unreadable: one line saying why
                typer.echo(f"{info.id}  {info.state:<11} {info.reason}")
                continue
            state = info.state if not info.interrupted else "interrupted"
            typer.echo(
                f"{info.id}  {state:<11} {info.frames:>4} frames  best {_format_score(info.best_score)}"
                + (f"  {info.name}" if info.name else "")
                + (f"  ({info.stop_reason})" if info.stop_reason else "")
            )

    @session_app.command("show")
    def session_show(
        session_id: str = typer.Argument(..., help="Session id (or a unique prefix)."),
        config: ConfigOption = None,
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Show a session: state, best parameters and the Pareto front of its objectives."""
        from stedloop.store import SessionStore
        from stedloop.store.export import summary

        store = SessionStore.from_config(load_cli_config(config).config)
        record = store.open(session_id, readonly=True)
        say_prefix_expanded(session_id, record.id)
        try:
            info = summary(record.history())
        finally:
            record.close()
        if as_json:
            print_json(info)
            return
        typer.echo(f"session {record.id}" + (f" ({info['name']})" if info["name"] else ""))
        typer.echo(
            f"  state: {info['state']}"
            + (f" ({info['stop_reason']})" if info["stop_reason"] else "")
        )
        typer.echo(
            f"  frames: {info['frames']} ({info['failed_frames']} failed); seed {info['seed']}"
        )
        if info.get("warm_start"):
            typer.echo(describe_warm_start(info["warm_start"]))
        names = [o["name"] for o in info["objectives"]]
        typer.echo(
            "  objectives: "
            + ", ".join(f"{o['name']} ({o['unit']}, {o['direction']})" for o in info["objectives"])
        )
        best = info["best"]
        if best:
            typer.echo(
                f"  best: frame {best['frame']}  {_format_params(best['params'])}  score {_format_score(best['combined'])}"
            )
        for row in info["overviews"]:  # regions picked from confocal overviews (issue 19)
            area = row["area"]
            typer.echo(
                f"  overview {row['overview']} (before frame {row['before_frame']}): "
                f"{area['width_um']:g} x {area['height_um']:g} µm at "
                f"({area['x_um']:g}, {area['y_um']:g}) µm, {row['regions_picked']} regions "
                f"picked ({row['in_band']}/{row['candidates']} fields within the bands), "
                f"frames {_frame_list(row['frames'])}; {row['tiff'] or 'no file'}"
            )
        typer.echo(f"  Pareto front ({len(info['pareto_front'])} frames):")
        for point in info["pareto_front"]:
            values = "  ".join(f"{n} {_format_score(point['values'].get(n))}" for n in names)
            typer.echo(
                f"    frame {point['frame']:>4}  {_format_params(point['params'])}  {values}"
            )

    @session_app.command("export")
    def session_export(
        session_id: str = typer.Argument(..., help="Session id (or a unique prefix)."),
        out: Path | None = typer.Option(
            None,
            "--out",
            "-o",
            help="Folder for frames.csv and the plots (default: the session's export/).",
        ),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="Also write PNG plots."),
        frames: bool = typer.Option(
            True,
            "--frames/--no-frames",
            help="Also write copies of the frame files with their scores in the OME metadata "
            "(without: the CSV points at the session's own files).",
        ),
        config: ConfigOption = None,
    ) -> None:
        """Export every frame as CSV (parameters, objective values, outcome), copies of the
        frame files with their scores in the OME metadata, and PNG plots and figure."""
        from stedloop.store import SessionStore
        from stedloop.store.export_folder import FRAMES_FOLDER, export_session

        store = SessionStore.from_config(load_cli_config(config).config)
        record = store.open(session_id, readonly=True)
        say_prefix_expanded(session_id, record.id)
        try:
            history = record.history()
        finally:
            record.close()
        if out is not None:
            folder = output_folder(out)
        else:
            folder = output_folder(record.folder / "export", "the session's export folder")
        written = export_session(history, record.folder, folder, plots=plots, frames=frames)
        copies = [p for p in written if p.parent == folder / FRAMES_FOLDER]
        for path in written:
            if path not in copies:
                typer.echo(str(path))
        if copies:
            typer.echo(
                f"{folder / FRAMES_FOLDER}/ ({len(copies)} frames, scores in their metadata)"
            )


def _run_session(
    loaded: LoadedConfig,
    store: SessionStore,
    resume: str | None,
    force: bool,
    name: str | None,
    as_json: bool,
    progress: _Progress,
    share_driver: bool,
    warm_start: list[str],
) -> SessionSummary:
    from stedloop.session import Session

    with _create_driver(loaded.config, progress, share_driver) as instrument:
        hardware = instrument.driver
        if resume:
            session = Session.resume(resume, loaded, hardware, store=store, force=force)
            say_prefix_expanded(resume, str(session.id))
        else:
            session = Session.start(loaded, hardware, store=store, name=name, warm_from=warm_start)
        progress.session_id = str(session.id)
        try:
            if not as_json:
                progress.console.print(f"session {session.id} in {session.folder}")
                if session.warm_start is not None:
                    progress.console.print(describe_warm_start(session.warm_start.to_data()))
            summary = _run_in_foreground(session, progress)
        finally:
            session.close()
    return summary


def _resume_config(
    store: SessionStore,
    session_id: str,
    cli_overrides: dict[str, Any] | None,
    force: bool,
    progress: _Progress,
) -> LoadedConfig:
    from stedloop.config.resume import resume_settings

    record = store.open(session_id, readonly=True)
    try:
        recorded = dict(record.history().created.get("config") or {})
    finally:
        record.close()
    site = load_cli_config(None)
    loaded, notes = resume_settings(site, recorded, record.id, cli_overrides, force)
    for note in notes:
        progress.log("warning", note)
    return loaded


def _create_driver(config: StedloopConfig, progress: _Progress, share_driver: bool) -> OpenDriver:
    from stedloop.instrument import open_driver

    # One process drives a microscope: refuse to start a second driver beside a daemon.
    return open_driver(
        config,
        "`stedloop optimize`",
        share=share_driver,
        on_fault=lambda kind, details: progress.log("error", f"{kind}: {details}"),
    )
