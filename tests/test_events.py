"""The typed session events: one vocabulary for the ledger, the wire and every reader."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stedloop import events as ev
from stedloop.config import LoadedConfig, load_config
from stedloop.drivers import create_driver
from stedloop.objectives.bleaching import BleachingObjective
from stedloop.objectives.resolution import ResolutionObjective
from stedloop.session import Session
from stedloop.store import SessionStore
from stedloop.store import ledger as L

DOCS = Path(__file__).resolve().parents[1] / "docs"
PARAMS = {"dwell_time_us": 10.0, "excitation_uw": 5.0, "depletion_mw": 100.0}
REGION = {"x_um": 0.0, "y_um": 0.0, "width_px": 64, "height_px": 64}


def one_of_each() -> list[ev.SessionEvent]:
    progress = {"frames_done": 3, "best_score": 0.7, "best_params": PARAMS}
    outcome = {
        "frame": 2,
        "params": PARAMS,
        "values": {"resolution": 80.0, "bleaching": None},
        "budget_frames": 10,
        "tiff": "/data/s/frames/0002.ome.tif",
        "timings_ms": {"acquire_ms": 12.5},
        **progress,
    }
    return [
        ev.Created(
            id="s", seed=4, objectives=[{"name": "q", "unit": "u", "direction": "maximize"}]
        ),
        ev.Opened(resumed=True, budget_frames=10, notes=["cap changed"], **progress),
        ev.Paused(**progress),
        ev.Resumed(**progress),
        ev.Finished(reason="frame budget of 10 spent", **progress),
        ev.Stopped(state="failed", reason="driver failed", **progress),
        ev.WarmStarted(
            sessions=["a", "b"],
            auto=True,
            structure="actin",
            observations=40,
            prior_points=[{"session": "a", "frame": 7, "params": PARAMS, "score": 0.8}],
        ),
        ev.Proposed(frame=2, params=PARAMS, source="model", decision_ms=3.5),
        ev.Acquiring(frame=2, attempt=2, region=REGION),
        ev.Acquired(frame=2, tiff="frames/0002.ome.tif", params_applied=PARAMS, region=REGION),
        ev.Scored(frame=2, values={"q": 0.7, "r": None}, errors={"r": "nan"}, combined=0.7),
        ev.Told(combined=0.7, **outcome),
        ev.Failed(reason="r: nan", **outcome),
        ev.Error(frame=2, stage="acquire", attempt=1, error="DriverError: x", will_retry=True),
        ev.OverviewTaken(
            overview=0,
            before_frame=2,
            area={"x_um": 0.0, "y_um": 0.0, "width_um": 40.0, "height_um": 40.0},
            pixel_size_nm=100.0,
            params_applied={**PARAMS, "depletion_mw": 0.0},
            tiff="overviews/0000.tif",
            regions=[{**REGION, "foreground_fraction": 0.3, "structure_content": 1.1}],
            candidates=100,
            in_band=12,
        ),
        ev.Log(level="warning", message="frame 2 attempt 1/3 failed"),
    ]


def test_every_event_class_is_covered_here() -> None:
    assert {type(e) for e in one_of_each()} == set(ev.EVENT_CLASSES)
    assert ev.LEDGER_KINDS == L.KINDS
    assert {c.topic for c in ev.EVENT_CLASSES} == {None, *ev.TOPICS}


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.kind)
def test_events_cross_json_and_the_ledger_as_the_same_types(
    event: ev.SessionEvent, tmp_path: Path
) -> None:
    again = ev.from_data(json.loads(json.dumps(event.to_data())))
    assert type(again) is type(event) and again == event
    if event.topic is not None:  # the wire form (protocol v1 keys added) reads back too
        assert ev.from_wire(event.topic, json.loads(json.dumps(event.to_wire()))) == event
    if event.recorded:
        with L.Ledger(tmp_path / "l.sqlite", create=True) as ledger:
            ledger.record(event)
            (row,) = ledger.events()
        assert (row.kind, row.frame) == (event.kind, event.frame_no)
        assert ev.from_ledger(row.kind, row.frame, row.payload) == event


def test_events_cross_a_process_boundary_and_come_back_typed() -> None:
    """What a session in a child process would send: plain data, the same classes back."""
    sent = [e.to_data() for e in one_of_each()]
    child = (
        "import json, sys; from stedloop import events as ev; "
        "print(json.dumps([ev.from_data(d).to_data() for d in json.load(sys.stdin)]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", child], input=json.dumps(sent), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert [ev.from_data(d) for d in json.loads(done.stdout)] == one_of_each()


def test_the_wire_keeps_protocol_v1_keys() -> None:
    """New event fields are added; what clients of protocol v1 read is still there."""
    told = next(e for e in one_of_each() if isinstance(e, ev.Told))
    frame = told.to_wire()
    for key in ("frame", "params", "values", "combined", "status", "best_score", "best_params"):
        assert key in frame
    assert frame["status"] == "told" and frame["frames_done"] == 3 and frame["tiff"]
    for event in one_of_each():
        if event.topic == ev.SESSION_TOPIC:
            data = event.to_wire()
            assert data["state"] in ("started", "resumed", "paused", *ev.END_STATES)
            assert data["frames"] == 3
    assert "config" not in ev.Opened(config={"big": 1}).to_wire()


def test_events_of_a_daemon_before_typed_events_are_read() -> None:
    frame = {"frame": 3, "params": PARAMS, "values": {"q": 0.5}, "combined": 0.5}
    read = ev.from_wire("frame", {"session": "s", **frame, "best_score": 0.7})
    assert isinstance(read, ev.Told) and read.frame == 3 and read.best_score == 0.7
    ended = ev.from_wire("session", {"state": "failed", "error": "boom"})
    assert isinstance(ended, ev.Stopped) and ended.state == "failed" and ended.reason == "boom"
    assert isinstance(ev.from_wire("log", {"level": "info", "message": "m"}), ev.Log)
    assert ev.from_wire("frame", {"kind": "from-a-newer-daemon"}) is None


def test_a_malformed_event_names_the_field() -> None:
    with pytest.raises(ValueError, match="proposed.params"):
        ev.from_data({"kind": "proposed", "frame": 0, "params": "fast"})


# -- ledgers written before typed events ----------------------------------------------------
def config(budget: int) -> LoadedConfig:
    return load_config(
        overrides={
            "session": {"budget_frames": budget, "retry_delay_s": 0.0},
            "optimizer": {"random_seed": 3, "n_candidates": 300},
            "objectives": {"names": ["resolution", "bleaching"]},
            "drivers": {"simulator": {"field_px": 64, "sample_fields": 4}},
        }
    )


def driver(loaded: LoadedConfig) -> Any:
    simulator = create_driver(loaded.config)
    simulator.connect()
    return simulator


def write_v1_rows(ledger: L.Ledger, session: Session, frames: int) -> None:
    """Rows exactly as stedloop wrote them before ``stedloop.events`` (schema 1)."""
    ledger.append(L.OPENED, {"resumed": False, "budget_frames": frames, "target_score": None})
    best = None
    for n in range(frames):
        params = session.optimizer.ask(n).params.as_dict()
        region = {"x_um": 12.8 * n, "y_um": 0.0, "width_px": 64, "height_px": 64}
        ledger.append(
            L.PROPOSED, {"params": params, "source": "design", "decision_ms": 1.0}, frame=n
        )
        ledger.append(L.ACQUIRING, {"attempt": 1, "region": region}, frame=n)
        ledger.append(
            L.ACQUIRED,
            {"tiff": None, "params_applied": params, "region": region, "pixel_size_nm": 20.0},
            frame=n,
        )
        score = 0.2 + 0.1 * n
        values = {"resolution": 120.0 - n, "bleaching": 0.1}
        ledger.append(L.SCORED, {"values": values, "errors": {}, "combined": score}, frame=n)
        ledger.append(L.TOLD, {"score": score, "timings_ms": {"score_ms": 1.0}}, frame=n)
        best = (score, params)
    assert best is not None
    ledger.append(
        L.FINISHED,
        {"state": "finished", "reason": "budget", "frames": frames, "best_score": best[0]}
        | {"best_params": best[1]},
    )


def test_a_ledger_of_the_old_format_replays_and_resumes(tmp_path: Path) -> None:
    loaded = config(budget=2)
    store = SessionStore(tmp_path / "sessions")
    objectives = [ResolutionObjective(), BleachingObjective()]
    session = Session.start(loaded, driver(loaded), store=store, objectives=objectives)
    write_v1_rows(session.record.ledger, session, frames=2)
    session.close()

    history = store.open(session.id, readonly=True).history()
    assert history.state == "finished" and history.frames_done == 2
    assert [f.status for f in history.done_frames()] == ["told", "told"]
    assert history.best() is not None and history.best().combined == pytest.approx(0.3)
    opened, finished = history.events[1], history.events[-1]
    assert isinstance(opened, ev.Opened) and opened.event_schema == 1
    assert isinstance(finished, ev.Finished) and finished.frames_done == 2
    told = history.frames[1].outcome
    assert isinstance(told, ev.Told) and told.combined == pytest.approx(0.3)

    more = config(budget=3)
    heard: list[ev.SessionEvent] = []
    resumed = Session.resume(session.id, more, driver(more), store=store, objectives=objectives)
    assert resumed.progress.frames_done == 2 and resumed.progress.best_score == pytest.approx(0.3)
    summary = resumed.run(on_event=heard.append)
    resumed.close()
    assert summary.state == "finished" and summary.frames == 3
    start = heard[0]
    assert isinstance(start, ev.Opened) and start.resumed and start.frames_done == 2
    assert start.best_score == pytest.approx(0.3)  # known before the run's first frame
    (frame,) = [e for e in heard if isinstance(e, ev.FrameOutcome)]
    assert frame.frame == 2 and frame.frames_done == 3
    after = store.open(session.id, readonly=True).history()
    assert after.frames_done == 3 and [e.kind for e in after.events].count("opened") == 2


# -- the documentation ----------------------------------------------------------------------
def doc_table(text: str, heading: str) -> dict[str, str]:
    """``kind -> row text`` of the table under ``heading`` in docs/session.md."""
    section = text.split(heading, 1)[1]
    rows: dict[str, str] = {}
    for line in section.splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        match = re.match(r"\| `(\w+)` \|(.*)", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_docs_list_every_event_and_field() -> None:
    text = (DOCS / "session.md").read_text()
    table = doc_table(text, "### Event classes")
    for kind, topic, fields in ev.field_table():
        assert kind in table, f"docs/session.md lacks event {kind}"
        row = table[kind]
        assert f"`{topic}`" in row if topic else "—" in row.split("|")[0], (kind, row)
        for name in fields:
            assert f"`{name}`" in row, f"docs/session.md: event {kind} lacks field {name}"
    assert set(table) == set(ev.BY_KIND)
