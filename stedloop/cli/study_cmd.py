"""`stedloop study serve|report|add-baseline|live`: the blinded expert study, labelling, the
study report, and the live view of a running daemon session."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stedloop.cli.common import fail, output_folder, print_json

DEFAULT_PORT = 8765

PortOption = Annotated[
    int, typer.Option("--port", "-p", min=0, max=65535, help="TCP port to listen on.")
]
HostOption = Annotated[
    str,
    typer.Option(
        "--host",
        help="Address to listen on. Default loopback; use 0.0.0.0 only on a trusted lab network.",
    ),
]


def _serve(app: object, host: str, port: int) -> None:
    """Run uvicorn on a socket bound here, so the printed address is the real one (port 0)."""
    import socket

    import uvicorn

    from stedloop.errors import StedloopError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StedloopError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = sock.getsockname()[1]
    typer.echo(f"serving on http://{host}:{bound}/  (Ctrl-C to stop)", err=True)
    # Live-view event streams never end by themselves: give them 2 s on Ctrl-C.
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)  # type: ignore[arg-type]
    uvicorn.Server(config).run(sockets=[sock])


def register(app: typer.Typer) -> None:
    study_app = typer.Typer(
        help="Blinded expert study, labelling, study report, live session view.",
        no_args_is_help=True,
    )
    app.add_typer(study_app, name="study")

    @study_app.command("serve")
    def serve(
        set_dir: Annotated[
            Path,
            typer.Option(
                "--set",
                help="Study mode: a study set (images/ + study.csv). Label mode: a folder of TIFFs to label.",
            ),
        ],
        mode: Annotated[str, typer.Option("--mode", help="study or label.")] = "study",
        db: Annotated[
            Path | None,
            typer.Option(
                "--db", help="SQLite file for answers/labels (default: SET/answers.sqlite)."
            ),
        ] = None,
        out: Annotated[
            Path | None,
            typer.Option(
                "--out", help="Label mode: dataset folder to write (one sub-folder per labeller)."
            ),
        ] = None,
        structure: Annotated[
            str, typer.Option("--structure", help="Label mode: structure written to the manifest.")
        ] = "unknown",
        pixel_size_nm: Annotated[
            float, typer.Option("--pixel-size-nm", min=0.1, help="Pixel size for the scale bar.")
        ] = 20.0,
        connect: Annotated[
            str | None,
            typer.Option(
                "--connect", help="Also show the live view of this daemon (tcp://host:port)."
            ),
        ] = None,
        events: Annotated[
            str | None,
            typer.Option("--events", help="The daemon's event (PUB) address, if not the default."),
        ] = None,
        port: PortOption = DEFAULT_PORT,
        host: HostOption = "127.0.0.1",
    ) -> None:
        """Serve the blinded study (--mode study) or the labelling app (--mode label)."""
        from stedloop.study.app import create_app
        from stedloop.study.store import StudyStore

        if mode == "study":
            from stedloop.study.studyset import load_study_set

            study = load_study_set(set_dir)
            store = StudyStore(db or set_dir / "answers.sqlite")
            web = create_app(
                mode="study", study=study, store=store, pixel_size_nm=pixel_size_nm,
                live_address=connect, live_event_address=events,
            )  # fmt: skip
            typer.echo(
                f"study set {set_dir}: {len(study.rows)} trials; answers in {store.path}", err=True
            )
        elif mode == "label":
            if out is None:
                fail("label mode needs --out DIR (the dataset to write)")
            output_folder(out)
            store = StudyStore(db or out / "labels.sqlite")
            web = create_app(
                mode="label", store=store, label_source=set_dir, label_out=out,
                label_structure=structure, pixel_size_nm=pixel_size_nm,
                live_address=connect, live_event_address=events,
            )  # fmt: skip
        else:
            fail(f"--mode must be study or label, not {mode!r}")
        _serve(web, host, port)

    @study_app.command("report")
    def report(
        db: Annotated[Path, typer.Option("--db", help="The study's answer database.")],
        out: Annotated[
            Path, typer.Option("--out", help="Folder for report.html, PNGs, CSV, JSON.")
        ],
        tester: Annotated[
            str | None,
            typer.Option(
                "--tester", help="Show this tester's counts in the bar charts (default: pooled)."
            ),
        ] = None,
        as_json: bool = typer.Option(False, "--json", help="Also print the summary as JSON."),
    ) -> None:
        """Tables like the paper's Tables 1–2 and stacked bars like Figures 8–9."""
        from stedloop.errors import DataError
        from stedloop.study.report import build_report, write_report
        from stedloop.study.store import StudyStore

        if not db.is_file():
            raise DataError(f"{db}: no such answer database")
        output_folder(out)
        store = StudyStore(db)
        try:
            result = build_report(store.answers())
        finally:
            store.close()
        from stedloop.cli.progress import CommandProgress

        with CommandProgress(
            "study report", 2 + len(result.structures), "figures", quiet=as_json
        ) as bar:
            written = write_report(
                result,
                out,
                source=str(db),
                tester=tester,
                progress=lambda done, _n: bar.update(done),
            )
        if as_json:
            print_json(result.to_json())
        else:
            for path in written:
                typer.echo(str(path))

    @study_app.command("add-baseline")
    def add_baseline(
        set_dir: Annotated[Path, typer.Option("--set", help="The study set to extend.")],
        labels: Annotated[
            Path,
            typer.Option(
                "--labels",
                help="CSV with a 'score' column: the training labels (e.g. its manifest).",
            ),
        ],
        seed: Annotated[
            int | None, typer.Option("--seed", help="Random seed (default: fresh).")
        ] = None,
    ) -> None:
        """Add the paper's random baseline: one trial per image scored by a random training label."""
        from stedloop.study.studyset import add_random_baseline, read_label_scores

        added = add_random_baseline(set_dir, read_label_scores(labels), seed=seed)
        typer.echo(f"added {added} random-baseline trials to {set_dir / 'study.csv'}")

    @study_app.command("live")
    def live(
        connect: Annotated[
            str, typer.Option("--connect", help="Daemon request address (tcp://host:port).")
        ],
        events: Annotated[
            str | None,
            typer.Option("--events", help="The daemon's event (PUB) address, if not the default."),
        ] = None,
        port: PortOption = DEFAULT_PORT,
        host: HostOption = "127.0.0.1",
    ) -> None:
        """Serve only the live view of a running daemon session."""
        from stedloop.study.app import create_app

        _serve(create_app(mode="live", live_address=connect, live_event_address=events), host, port)
