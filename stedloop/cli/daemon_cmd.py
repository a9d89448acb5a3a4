"""Daemon commands: `stedloop serve | start | status | stop | pause | resume | watch | ls |
keys | demo`. Everything but `serve`, `keys` and `demo` is a client of a running daemon."""

from __future__ import annotations

import faulthandler
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stedloop.cli.common import (
    ConfigOption,
    fail,
    load_cli_config,
    print_json,
    say_prefix_expanded,
)

if TYPE_CHECKING:
    from stedloop.client import Client

ConnectOption = Annotated[
    str | None,
    typer.Option(
        "--connect",
        help="Daemon request address, e.g. tcp://host:5755 (default: daemon.request_address).",
        show_default=False,
    ),
]
KeysOption = Annotated[
    Path | None,
    typer.Option(
        "--keys",
        help="CURVE key folder with server.key and client.key[_secret] (default: "
        "daemon.keys_dir when CURVE is configured).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        help="How long to wait for the daemon's reply, seconds, its one resend included "
        "(no daemon listening is said within about a second).",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", help="Session token (default: the one saved by `stedloop start`)."),
]


def _client(
    config: Path | None, connect: str | None, keys: Path | None, timeout_s: float
) -> Client:
    from stedloop.client import Client
    from stedloop.wire.security import keys_dir_of

    loaded = load_cli_config(config)
    address = connect or loaded.config.daemon.request_address
    keys_dir = keys if keys is not None else keys_dir_of(loaded)
    return Client(address, timeout_s=timeout_s, curve=keys_dir)


def event_address_for(request_address: str, reported: str) -> str:
    """Where to subscribe: the daemon's event port on the host we reached it at (a daemon
    bound to 0.0.0.0 reports that, which is not an address to connect to)."""
    from urllib.parse import urlsplit

    if not reported.startswith("tcp://"):
        return reported
    host = urlsplit("//" + reported[6:]).hostname or ""
    if host not in ("0.0.0.0", "*", "::", ""):
        return reported
    port = reported.rsplit(":", 1)[1]
    reached = urlsplit("//" + request_address[6:]).hostname or "127.0.0.1"
    reached = f"[{reached}]" if ":" in reached else reached
    return f"tcp://{reached}:{port}"


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """``a.b.c=value`` items to nested overrides; values are JSON when they parse as JSON."""
    overrides: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            fail(
                f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. session.budget_frames=20"
            )
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        table = overrides
        parts = key.split(".")
        for part in parts[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                fail(f"--set {item!r} conflicts with another --set of {part}")
        table[parts[-1]] = value
    return overrides


def _current_session(client: Client, session_id: str | None) -> str:
    if session_id:
        return session_id
    status = client.call("status")
    session = status.get("session")
    if not session:
        fail("no session in this daemon; name one (see `stedloop ls`)")
    return str(session["id"])


def _token(client: Client, session_id: str, token: str | None) -> str:
    from stedloop.client.tokens import load_token

    found = token or load_token(client.address, session_id)
    if not found:
        fail(
            f"no token for session {session_id}: only the client that started it may control "
            "it; pass --token"
        )
    return found


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return "–" if value is None else str(value)


def describe_status(status: dict[str, Any]) -> str:
    d = status["daemon"]
    lines = [
        f"daemon   stedloop {d['version']} (protocol v{d['protocol']}), pid {d['pid']}, "
        f"up {d['uptime_s']:.0f} s, {'CURVE' if d['curve'] else 'loopback, no CURVE'}",
        f"         requests {d['request_address']}   events {d['event_address']}",
        f"driver   {status['driver'].get('name', '?')}"
        + (" (worker process)" if status["driver"].get("in_worker") else ""),
        f"model    {status['scorer']['state']}"
        + (f" on {status['scorer']['device']}" if status["scorer"].get("device") else "")
        + (f": {status['scorer']['error']}" if status["scorer"].get("error") else ""),
    ]
    session = status.get("session")
    if session:
        # The session's own count and best (a resumed session's include its earlier runs);
        # a daemon before them sent only `frames` and the last frame's best.
        done = session.get("frames_done", session.get("frames"))
        best = session.get("best_score", (session.get("last_frame") or {}).get("best_score"))
        lines.append(
            f"session  {session['id']}  {session['state']}  {done}/{session['budget_frames']} "
            f"frames done  best {_fmt(best)}"
        )
    else:
        lines.append("session  none")
    if status.get("interrupted"):
        lines.append(
            "interrupted (resume with `stedloop start --resume ID`): "
            + ", ".join(status["interrupted"])
        )
    return "\n".join(lines)


def _params_text(params: dict[str, Any]) -> str:
    return (
        f"dwell {_fmt(params.get('dwell_time_us'))} µs  exc {_fmt(params.get('excitation_uw'))} "
        f"µW  dep {_fmt(params.get('depletion_mw'))} mW"
    )


def describe_event(event: dict[str, Any]) -> str:
    """One line for a published event (its ``data`` read as a typed event)."""
    from stedloop import events as ev

    topic = event.get("topic")
    if topic == "gap":
        return f"(missed {event['missed']} events: older than the daemon's event buffer)"
    data = event.get("data") or {}
    typed = ev.from_wire(topic, data)
    if isinstance(typed, ev.FrameOutcome):
        shown = "  ".join(f"{k} {_fmt(v)}" for k, v in typed.values.items())
        failed = "  failed" if isinstance(typed, ev.Failed) and typed.values else ""
        return (
            f"frame {typed.frame}  {_params_text(typed.params)}  {shown}  "
            f"score {_fmt(typed.combined)}  best {_fmt(typed.best_score)}{failed}"
        )
    if isinstance(typed, (ev.Opened, ev.Paused, ev.Resumed, ev.Ended)):
        parts = [f"session {typed.state}"]
        if isinstance(typed, ev.Ended) and typed.reason:
            parts.append(f"({typed.reason})")
        if typed.frames_done is not None:
            parts.append(f"frames {typed.frames_done}")
        if typed.best_score is not None:
            parts.append(f"best {_fmt(typed.best_score)}")
        if typed.best_params:
            parts.append(_params_text(typed.best_params))
        return "  ".join(parts)
    if isinstance(typed, ev.Log):
        return f"{typed.level}: {typed.message}"
    return f"{topic}: {json.dumps(data, default=str)}"  # an event this version does not know


def final_state(event: dict[str, Any]) -> str | None:
    """The run's final state when ``event`` is its last one (a session event that ends it)."""
    from stedloop import events as ev

    typed = ev.from_wire(event.get("topic"), event.get("data") or {})
    return typed.state if isinstance(typed, ev.Ended) else None


#: A ``first_frame`` past any session's last frame: session.get without its frame list.
NO_FRAMES = 2**31


def _print_event(event: dict[str, Any], as_json: bool) -> str | None:
    """Print one event; the session's final state when it is its last event."""
    if as_json:
        print_json(event)
    else:
        typer.echo(describe_event(event))
    return final_state(event)


def watch_session(
    client: Client, event_address: str, session_id: str, as_json: bool, since_seq: int = 0
) -> str | None:
    """Print a session's events after ``since_seq`` until it ends; returns its final state.

    ``since_seq``: where the session's current run began (``since_seq`` of the start reply or
    of the status's session); an earlier run of the same session ended before it."""
    for event in client.follow(event_address, since_seq=since_seq):
        if event.get("session_id") not in (session_id, None) and event.get("topic") != "gap":
            continue
        final = _print_event(event, as_json)
        if final is not None:
            return final
    return None


def replay_ended_session(client: Client, detail: dict[str, Any], as_json: bool) -> str:
    """A session that does not run in this daemon: print its buffered events (every run of
    it this daemon saw) and how it ended, at once (following it would wait forever). Returns
    its final state: that of its last run here, else its ledger's."""
    session_id = detail["id"]
    seq = 0
    final: str | None = None
    while True:
        page = client.call("events.since", seq=seq, limit=1000)
        for event in page["events"]:
            if event.get("session_id") == session_id:
                final = _print_event(event, as_json) or final
        if not page["events"] or not page["more"]:
            break
        seq = page["events"][-1]["seq"]
    if final is not None:
        return final
    state = str(detail["ledger_state"])
    if as_json:
        print_json(
            {
                "session_id": session_id,
                "running": False,
                "state": state,
                "stop_reason": detail.get("stop_reason"),
                "frames_done": detail.get("frames_done"),
            }
        )
    elif detail.get("interrupted"):
        typer.echo(
            f"session {session_id} is not running in this daemon: its ledger has no end "
            f"(interrupted, or run by another process); resume it with `stedloop start "
            f"--resume {session_id}`"
        )
    else:
        typer.echo(
            f"session {session_id} {state}"
            + (f" ({detail['stop_reason']})" if detail.get("stop_reason") else "")
            + f", {detail.get('frames_done')} frames; it does not run in this daemon"
        )
    return "interrupted" if detail.get("interrupted") else state


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        config: ConfigOption = None,
        request_address: Annotated[
            str | None, typer.Option("--request-address", help="Override daemon.request_address.")
        ] = None,
        event_address: Annotated[
            str | None, typer.Option("--event-address", help="Override daemon.event_address.")
        ] = None,
        ready_file: Annotated[
            Path | None,
            typer.Option("--ready-file", help="Write the bound addresses here (JSON) when ready."),
        ] = None,
        share_driver: Annotated[
            bool,
            typer.Option(
                "--share-driver",
                help="Run even if another stedloop process drives this driver from the same "
                "data folder (only for drivers that may be shared, such as the simulator).",
            ),
        ] = False,
    ) -> None:
        """Run the daemon: own the driver and the model, serve sessions over ZeroMQ."""
        overrides: dict[str, Any] = {}
        if request_address:
            overrides.setdefault("daemon", {})["request_address"] = request_address
        if event_address:
            overrides.setdefault("daemon", {})["event_address"] = event_address
        loaded = load_cli_config(config, overrides=overrides or None)
        from stedloop.logs import configure_logging
        from stedloop.paths import ensure_data_dir
        from stedloop.server.daemon import Daemon

        # Checked before the daemon touches the driver: one line, not a traceback.
        ensure_data_dir(loaded.config.store.data_dir)
        if ready_file is not None:
            _check_ready_file(ready_file)

        section = loaded.config.logging
        configure_logging(section.level, section.json_file)
        # A crash in native code (libzmq, torch, a vendor driver) still leaves the Python
        # stacks of every thread in the log.
        faulthandler.enable()
        raise typer.Exit(Daemon(loaded, ready_file=ready_file, share_driver=share_driver).serve())

    @app.command("status")
    def status(
        config: ConfigOption = None,
        connect: ConnectOption = None,
        keys: KeysOption = None,
        as_json: JsonOption = False,
        timeout_s: TimeoutOption = 5.0,
    ) -> None:
        """Show the daemon, its driver and model, the running and interrupted sessions."""
        with _client(config, connect, keys, timeout_s) as client:
            result = client.call("status")
        if as_json:
            print_json(result)
        else:
            typer.echo(describe_status(result))

    @app.command("start")
    def start(
        config: ConfigOption = None,
        connect: ConnectOption = None,
        keys: KeysOption = None,
        budget: Annotated[
            int | None, typer.Option("--budget", help="Frames the session may take.")
        ] = None,
        objective: Annotated[
            list[str] | None, typer.Option("--objective", help="Objective name (repeatable).")
        ] = None,
        set_: Annotated[
            list[str] | None,
            typer.Option(
                "--set",
                help="Config override KEY=VALUE (params., objectives., "
                "optimizer., session. only); repeatable.",
            ),
        ] = None,
        name: Annotated[str | None, typer.Option("--name", help="A label for the session.")] = None,
        resume: Annotated[
            str | None, typer.Option("--resume", help="Resume this interrupted session.")
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="Resume even if space/objectives changed.")
        ] = False,
        warm_start: Annotated[
            list[str] | None,
            typer.Option(
                "--warm-start",
                help="Start from these earlier sessions (ids; repeatable) or 'auto' (the most "
                "recent comparable ones).",
            ),
        ] = None,
        watch: Annotated[bool, typer.Option("--watch", help="Follow the session live.")] = False,
        as_json: JsonOption = False,
        timeout_s: TimeoutOption = 10.0,
    ) -> None:
        """Start (or resume) an optimisation session on the daemon."""
        import uuid

        from stedloop.client.tokens import save_token
        from stedloop.paths import ensure_data_dir

        ensure_data_dir()  # the session's token is saved there: refuse before starting one

        params: dict[str, Any] = {"idempotency_key": uuid.uuid4().hex, "force": force}
        if set_:
            params["overrides"] = parse_set(set_)
        if budget is not None:
            params["budget_frames"] = budget
        if objective:
            params["objectives"] = list(objective)
        if name:
            params["name"] = name
        if resume:
            params["resume"] = resume
        if warm_start:
            params["warm_start"] = list(warm_start)
        with _client(config, connect, keys, timeout_s) as client:
            result = client.call_when_ready("session.start", 60.0, **params)
            save_token(client.address, result["session_id"], result["token"])
            if as_json and not watch:
                print_json(result)
                return
            if result.get("expanded_from"):
                say_prefix_expanded(result["expanded_from"], result["session_id"])
            if not as_json:
                verb = "resumed" if result["resumed"] else "started"
                typer.echo(
                    f"session {result['session_id']} {verb}: budget {result['budget_frames']} "
                    f"frames, objectives {', '.join(result['objectives'])}"
                )
                for warning in result.get("warnings") or []:
                    typer.echo(f"warning: {warning}", err=True)
            if watch:
                status_now = client.call("status")
                events = event_address_for(client.address, status_now["daemon"]["event_address"])
                # From this run's first event: a resumed session's earlier runs ended before.
                since = int(result.get("since_seq") or 0)
                final = watch_session(client, events, result["session_id"], as_json, since)
                if final == "failed":
                    raise typer.Exit(1)

    @app.command("stop")
    def stop(
        session_id: Annotated[
            str | None, typer.Argument(help="Session (default: current).")
        ] = None,
        config: ConfigOption = None,
        connect: ConnectOption = None,
        keys: KeysOption = None,
        token: TokenOption = None,
        abort: Annotated[
            bool, typer.Option("--abort", help="Interrupt the frame in flight.")
        ] = False,
        as_json: JsonOption = False,
        timeout_s: TimeoutOption = 5.0,
    ) -> None:
        """Stop a session after its current frame (or at once with --abort)."""
        with _client(config, connect, keys, timeout_s) as client:
            sid = _current_session(client, session_id)
            result = client.call(
                "session.stop", session_id=sid, token=_token(client, sid, token), abort=abort
            )
        print_json(result) if as_json else typer.echo(
            f"session {sid}: stop requested ({result['state']})"
        )

    def _control(method: str, verb: str) -> Any:
        def command(
            session_id: Annotated[
                str | None, typer.Argument(help="Session (default: current).")
            ] = None,
            config: ConfigOption = None,
            connect: ConnectOption = None,
            keys: KeysOption = None,
            token: TokenOption = None,
            as_json: JsonOption = False,
            timeout_s: TimeoutOption = 5.0,
        ) -> None:
            with _client(config, connect, keys, timeout_s) as client:
                sid = _current_session(client, session_id)
                result = client.call(method, session_id=sid, token=_token(client, sid, token))
            print_json(result) if as_json else typer.echo(
                f"session {sid}: {verb} ({result['state']})"
            )

        return command

    app.command(
        "pause", help="Pause the session at the next frame boundary (lasers to safe state)."
    )(_control("session.pause", "pause requested"))
    app.command("resume", help="Resume a paused session (same session, same optimizer).")(
        _control("session.resume", "resumed")
    )

    @app.command("watch")
    def watch(
        session_id: Annotated[
            str | None, typer.Argument(help="Session (default: current).")
        ] = None,
        config: ConfigOption = None,
        connect: ConnectOption = None,
        keys: KeysOption = None,
        as_json: JsonOption = False,
        timeout_s: TimeoutOption = 5.0,
    ) -> None:
        """Follow a session live until it ends (its earlier events first). A session that
        does not run in this daemon is answered at once with how it ended; an unknown id is
        an error."""
        with _client(config, connect, keys, timeout_s) as client:
            status_now = client.call("status")
            asked = _current_session(client, session_id)
            # The ledger knows every session (and expands a unique prefix); frames are not
            # needed here, so ask for none.
            detail = client.call("session.get", session_id=asked, first_frame=NO_FRAMES)
            sid = detail["id"]
            say_prefix_expanded(asked, sid)
            if detail["state"] == "running":
                events = event_address_for(client.address, status_now["daemon"]["event_address"])
                since = int((detail.get("live") or {}).get("since_seq") or 0)
                final = watch_session(client, events, sid, as_json, since)
            else:
                final = replay_ended_session(client, detail, as_json)
        if final in ("failed", "interrupted"):
            raise typer.Exit(1)

    @app.command("ls")
    def ls(
        config: ConfigOption = None,
        connect: ConnectOption = None,
        keys: KeysOption = None,
        limit: Annotated[int, typer.Option("--limit", help="Newest N sessions.")] = 50,
        as_json: JsonOption = False,
        timeout_s: TimeoutOption = 5.0,
    ) -> None:
        """List the daemon's sessions, newest first."""
        from stedloop.store.session_store import creation_order_s

        with _client(config, connect, keys, timeout_s) as client:
            result = client.call("sessions.list", limit=limit)
        # The protocol lists oldest first; a person reads today's session first.
        result["sessions"] = sorted(result["sessions"], key=creation_order_s, reverse=True)
        if as_json:
            print_json(result)
            return
        if not result["sessions"]:
            typer.echo("no sessions")
        for s in result["sessions"]:
            if s.get("reason"):  # unreadable (a damaged ledger): say why, in one line
                typer.echo(f"{s['id']}  {s['state']}  {s['reason']}")
                continue
            flag = " (running)" if s["running"] else " (interrupted)" if s["interrupted"] else ""
            typer.echo(
                f"{s['id']}  {s['state']}{flag}  {s['frames']} frames  best "
                f"{_fmt(s['best_score'])}  {s['name'] or ''}".rstrip()
            )

    @app.command("keys")
    def keys_cmd(
        config: ConfigOption = None,
        directory: Annotated[
            Path | None,
            typer.Option("--dir", help="Key folder (default: daemon.keys_dir or <data dir>/keys)."),
        ] = None,
        client_name: Annotated[
            str, typer.Option("--client", help="Name of the client key pair to create.")
        ] = "client",
    ) -> None:
        """Create CURVE keys: the daemon's pair (once) and an authorised client pair."""
        from stedloop.paths import data_dir
        from stedloop.wire.security import create_keys

        loaded = load_cli_config(config)
        target = (
            directory
            or loaded.config.daemon.keys_dir
            or data_dir(loaded.config.store.data_dir) / "keys"
        )
        made = create_keys(Path(target).expanduser(), client_name)
        typer.echo(f"keys in {Path(target).expanduser()}:")
        for label, path in made.items():
            typer.echo(f"  {label:<15} {path}")
        typer.echo(
            "Set daemon.keys_dir to this folder on the daemon; give a client server.key and its "
            "own pair, and put its public .key in authorized_clients/."
        )


def _check_ready_file(path: Path) -> None:
    """The folder of ``--ready-file`` must exist (the file is written once the daemon is up)."""
    from stedloop.cli.common import short_path

    try:
        usable = path.parent.is_dir() and not path.is_dir()
    except OSError as exc:  # e.g. a name too long
        fail(f"--ready-file {short_path(path)}: {exc.strerror}")
    if not usable:
        fail(f"--ready-file {short_path(path)}: its folder does not exist, or it is a folder")
