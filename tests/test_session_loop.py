"""The session loop on the real simulator, a real ledger and real TIFF files."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import tifffile

from stedloop import events as ev
from stedloop.config import LoadedConfig, load_config
from stedloop.config.schema import OptimizerSection
from stedloop.driver import AcquireRequest
from stedloop.drivers import create_driver
from stedloop.errors import ConfigError
from stedloop.frame import Frame
from stedloop.objectives.bleaching import BleachingObjective
from stedloop.objectives.resolution import ResolutionObjective
from stedloop.optimize import BayesianOptimizer, SearchSpace
from stedloop.params import ImagingParams
from stedloop.session import Session, SessionControl, interrupted_sessions
from stedloop.store import SessionStore
from stedloop.store import ledger as L


def config(budget: int = 5, sim: dict[str, Any] | None = None, **sections: Any) -> LoadedConfig:
    overrides: dict[str, Any] = {
        "session": {"budget_frames": budget, "retry_delay_s": 0.0, **sections.pop("session", {})},
        "optimizer": {"random_seed": 7, "n_candidates": 300, **sections.pop("optimizer", {})},
        "objectives": {"names": ["resolution", "bleaching"]},
        "drivers": {"simulator": {"sample_fields": 4, "field_px": 64, **(sim or {})}},
        **sections,
    }
    return load_config(overrides=overrides)


class SpyDriver:
    """The real simulator, with its safe_state calls counted (the hardware boundary)."""

    def __init__(self, loaded: LoadedConfig, interrupt_on: int | None = None) -> None:
        self.inner = create_driver(loaded.config)
        self.inner.connect()
        self.safe_calls = 0
        self.acquires = 0
        self.interrupt_on = interrupt_on

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def acquire(self, request: AcquireRequest) -> Frame:
        self.acquires += 1
        if self.interrupt_on is not None and self.acquires - 1 == self.interrupt_on:
            raise KeyboardInterrupt  # what Ctrl-C would do in the middle of a frame
        return self.inner.acquire(request)

    def safe_state(self) -> None:
        self.safe_calls += 1
        self.inner.safe_state()


def objectives() -> list[Any]:
    return [ResolutionObjective(), BleachingObjective()]


def run(loaded: LoadedConfig, driver: Any, tmp_path: Path, **kwargs: Any):
    store = SessionStore(tmp_path / "sessions")
    session = Session.start(loaded, driver, store=store, objectives=objectives())
    events: list[ev.SessionEvent] = []
    summary = session.run(on_event=events.append, **kwargs)
    session.close()
    return session, summary, events, store


def kinds(session: Session) -> list[str]:
    record = SessionStore(session.folder.parent).open(session.id, readonly=True)
    return [e.kind for e in record.ledger.events()]


def test_session_runs_to_budget_records_everything_and_ends_safe(tmp_path: Path) -> None:
    loaded = config(budget=4)
    driver = SpyDriver(loaded)
    session, summary, events, store = run(loaded, driver, tmp_path)
    assert summary.state == "finished" and summary.frames == 4
    assert "budget" in summary.stop_reason
    assert driver.safe_calls >= 1  # run() always ends in the safe state
    history = store.open(session.id).history()
    frames = history.done_frames()
    assert [f.status for f in frames] == ["told"] * 4
    regions = {(r["x_um"], r["y_um"]) for r in history.used_regions()}
    assert len(regions) == 4  # never the same region twice
    for record in frames:
        stack = tifffile.imread(session.folder / record.tiff)
        assert stack.shape == (3, 64, 64)
        assert set(record.values) == {"resolution", "bleaching"}
    # Per frame, the ledger order is proposed, acquiring, acquired, scored, told.
    per_frame = [k for k in kinds(session) if k not in (L.CREATED, L.OPENED, L.FINISHED)]
    assert per_frame == [L.PROPOSED, L.ACQUIRING, L.ACQUIRED, L.SCORED, L.TOLD] * 4
    # Each event once: the listener hears what the ledger recorded, in the same order.
    recorded = [e.kind for e in events if e.recorded]
    assert recorded == kinds(session)[1:]  # all but `created` (written before the run)
    outcomes = [e for e in events if isinstance(e, ev.FrameOutcome)]
    assert [e.frame for e in outcomes] == [0, 1, 2, 3]
    assert [e.frames_done for e in outcomes] == [1, 2, 3, 4]
    assert isinstance(events[0], ev.Opened) and events[0].state == "started"
    assert isinstance(events[-1], ev.Finished) and events[-1].frames_done == 4
    told = outcomes[0]
    assert isinstance(told, ev.Told) and told.tiff and told.params and told.values
    assert told.best_score == told.combined and told.budget_frames == 4
    assert summary.best_score == max(f.combined for f in frames)


def test_driver_error_is_recorded_and_retried_on_a_fresh_region(tmp_path: Path) -> None:
    loaded = config(budget=3, sim={"fail_on_frame": 1})
    session, summary, events, store = run(loaded, SpyDriver(loaded), tmp_path)
    assert summary.state == "finished" and summary.frames == 3
    history = store.open(session.id).history()
    retried = history.frames[1]
    assert len(retried.errors) == 1 and "DriverError" in retried.errors[0].error
    assert len(retried.regions) == 2 and retried.regions[0] != retried.regions[1]
    assert any(isinstance(e, ev.Log) and "attempt 1/3" in e.message for e in events)


def test_spent_retries_stop_the_session_cleanly(tmp_path: Path) -> None:
    loaded = config(budget=5, sim={"fail_on_frame": 2}, session={"driver_retries": 0})
    driver = SpyDriver(loaded)
    session, summary, _, store = run(loaded, driver, tmp_path)
    assert summary.state == "failed" and summary.frames == 2
    assert "driver failed once on frame 2" in summary.stop_reason
    assert driver.safe_calls >= 1
    history = store.open(session.id).history()
    assert history.state == "stopped" and history.in_flight().frame == 2


def test_spent_retries_with_continue_policy_skip_the_point(tmp_path: Path) -> None:
    loaded = config(
        budget=4,
        sim={"fail_on_frame": 1},
        session={"driver_retries": 0, "on_driver_failure": "continue"},
    )
    session, summary, _, store = run(loaded, SpyDriver(loaded), tmp_path)
    assert summary.state == "finished" and summary.frames == 4
    statuses = [f.status for f in store.open(session.id).history().done_frames()]
    assert statuses == ["told", "failed", "told", "told"]


class FlakyObjective:
    API_VERSION = "2.0"
    name, unit, direction, bounds = "flaky", "u", "maximize", (0.0, 1.0)

    def __init__(self) -> None:
        self.calls = 0

    def evaluate(self, frame: Frame) -> float:
        self.calls += 1
        if self.calls == 2:
            return float("nan")
        if self.calls == 3:
            raise ValueError("cannot judge this frame")
        return 0.5


def test_nan_or_raising_objective_fails_the_point_which_is_never_told(tmp_path: Path) -> None:
    loaded = config(budget=4)
    store = SessionStore(tmp_path / "sessions")
    session = Session.start(loaded, SpyDriver(loaded), store=store, objectives=[FlakyObjective()])
    summary = session.run()
    assert summary.state == "finished" and summary.frames == 4
    history = store.open(session.id).history()
    assert [f.status for f in history.done_frames()] == ["told", "failed", "failed", "told"]
    assert "not a finite number" in history.frames[1].objective_errors["flaky"]
    assert "cannot judge" in history.frames[2].objective_errors["flaky"]
    assert session.optimizer.n_told == 2
    assert L.TOLD not in [
        e.kind for e in store.open(session.id).ledger.events() if e.frame in (1, 2)
    ]


def test_pause_resume_and_stop_from_another_thread(tmp_path: Path) -> None:
    loaded = config(budget=50, sim={"acquire_delay_s": 0.05})
    driver = SpyDriver(loaded)
    store = SessionStore(tmp_path / "sessions")
    session = Session.start(loaded, driver, store=store, objectives=objectives())
    control = SessionControl()
    events: list[ev.SessionEvent] = []
    seen = threading.Event()

    def on_event(event: ev.SessionEvent) -> None:
        events.append(event)
        if isinstance(event, ev.Paused):
            seen.set()

    def frames() -> int:
        return sum(isinstance(e, ev.FrameOutcome) for e in list(events))

    thread = threading.Thread(target=lambda: session.run(control, on_event))
    thread.start()
    while not frames():
        time.sleep(0.01)
    control.request_pause()
    assert seen.wait(5)
    assert control.state == "paused"
    safe_when_paused = driver.safe_calls
    assert safe_when_paused >= 1
    frames_when_paused = frames()
    time.sleep(0.3)
    assert frames() == frames_when_paused  # nothing while paused
    control.resume()
    while frames() < frames_when_paused + 1:
        time.sleep(0.01)
    control.request_stop()
    thread.join(10)
    assert not thread.is_alive()
    assert control.state == "finished"
    history = store.open(session.id).history()
    assert history.state == "stopped" and history.stop_reason == "stopped on request"
    assert [k for k in kinds(session) if k in (L.PAUSED, L.RESUMED)] == [L.PAUSED, L.RESUMED]
    assert all(f.done for f in history.frames.values())  # stop waits for the frame in flight


def test_abort_interrupts_the_frame_in_flight(tmp_path: Path) -> None:
    loaded = config(budget=5, sim={"acquire_delay_s": 30.0})
    driver = SpyDriver(loaded)
    store = SessionStore(tmp_path / "sessions")
    session = Session.start(loaded, driver, store=store, objectives=objectives())
    control = SessionControl()
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(summary=session.run(control)))
    thread.start()
    while driver.acquires == 0:
        time.sleep(0.01)
    time.sleep(0.1)
    started = time.monotonic()
    control.request_stop(abort=True)
    thread.join(10)
    assert time.monotonic() - started < 5
    summary = result["summary"]
    assert summary.state == "stopped" and "aborted" in summary.stop_reason
    assert driver.safe_calls >= 1
    errors = [e for e in store.open(session.id).ledger.events() if e.kind == L.ERROR]
    assert errors and errors[0].payload["aborted"] is True


def test_target_score_and_used_up_sample_finish_the_session(tmp_path: Path) -> None:
    loaded = config(budget=10, session={"target_score": 0.0})
    _, summary, _, _ = run(loaded, SpyDriver(loaded), tmp_path / "a")
    assert summary.state == "finished" and summary.frames == 1
    assert "target score" in summary.stop_reason
    loaded = config(budget=10, sim={"sample_fields": 2})
    _, summary, _, _ = run(loaded, SpyDriver(loaded), tmp_path / "b")
    assert summary.state == "finished" and summary.frames == 4
    assert "sample is used up" in summary.stop_reason


def test_interrupt_mid_frame_still_ends_safe_and_resume_redoes_only_that_frame(
    tmp_path: Path,
) -> None:
    loaded = config(budget=6)
    driver = SpyDriver(loaded, interrupt_on=3)
    store = SessionStore(tmp_path / "sessions")
    session = Session.start(loaded, driver, store=store, objectives=objectives())
    with pytest.raises(KeyboardInterrupt):
        session.run()
    session.close()
    assert driver.safe_calls >= 1
    before = store.open(session.id).history()
    assert before.state == "stopped" and len(before.done_frames()) == 3
    in_flight = before.in_flight()
    assert in_flight.frame == 3
    recorded = {f.frame: (f.params, f.values) for f in before.done_frames()}

    resumed = Session.resume(
        session.id, loaded, SpyDriver(loaded), store=store, objectives=objectives()
    )
    summary = resumed.run()
    resumed.close()
    assert summary.state == "finished" and summary.frames == 6
    after = store.open(session.id).history()
    assert [f.frame for f in after.done_frames()] == [0, 1, 2, 3, 4, 5]
    for frame, (params, values) in recorded.items():  # nothing recorded was lost or changed
        assert after.frames[frame].params == params and after.frames[frame].values == values
    assert after.frames[3].params == in_flight.params  # the in-flight frame, redone as proposed
    regions = [(r["x_um"], r["y_um"]) for r in after.used_regions()]
    assert len(regions) == len(set(regions)) == 7  # the redo took a fresh region


def test_optimizer_state_is_rebuilt_from_the_ledger(tmp_path: Path) -> None:
    loaded = config(budget=8, optimizer={"n_initial_points": 3})
    session, _, _, store = run(loaded, SpyDriver(loaded), tmp_path)
    history = store.open(session.id).history()
    settings: OptimizerSection = loaded.config.optimizer
    optimizer = BayesianOptimizer(
        SearchSpace(loaded.config.params, loaded.config.safety), settings, history.created["seed"]
    )
    for record in history.done_frames():
        assert optimizer.ask(record.frame).params.as_dict() == record.params
        optimizer.tell(ImagingParams.from_mapping(record.params), record.combined)
    resumed = Session.resume(
        session.id, loaded, SpyDriver(loaded), store=store, objectives=objectives()
    )
    assert resumed.optimizer.n_told == 8
    assert resumed.optimizer.ask(8).params == optimizer.ask(8).params
    resumed.close()


def test_resume_with_another_config_is_refused_unless_forced(tmp_path: Path) -> None:
    loaded = config(budget=2)
    session, _, _, store = run(loaded, SpyDriver(loaded), tmp_path)
    other = config(budget=3, params={"depletion_mw": {"min": 0.0, "max": 200.0}})
    with pytest.raises(ConfigError, match=r"params?.*depletion_mw.max"):
        Session.resume(session.id, other, SpyDriver(other), store=store, objectives=objectives())
    with pytest.raises(ConfigError, match="objectives"):
        Session.resume(
            session.id, loaded, SpyDriver(loaded), store=store, objectives=[ResolutionObjective()]
        )
    forced = Session.resume(
        session.id, other, SpyDriver(other), store=store, objectives=objectives(), force=True
    )
    summary = forced.run()
    forced.close()
    assert summary.frames == 3
    opened = [e for e in store.open(session.id).ledger.events() if e.kind == L.OPENED]
    assert opened[-1].payload["config_changes"]


def test_interrupted_sessions_lists_crashed_but_not_finished_or_running(tmp_path: Path) -> None:
    loaded = config(budget=1)
    finished, _, _, store = run(loaded, SpyDriver(loaded), tmp_path)
    crashed = store.create({"seed": 1, "objectives": []})
    assert [i.id for i in interrupted_sessions(store)] == [crashed.id]
    from stedloop.store.lock import FolderLock

    lock = FolderLock(crashed.folder)
    lock.acquire()  # as a live process running it would
    try:
        assert interrupted_sessions(store) == []
    finally:
        lock.release()
    assert finished.id not in [i.id for i in interrupted_sessions(store)]


def test_listener_errors_do_not_stop_the_session(tmp_path: Path) -> None:
    loaded = config(budget=2)

    def broken(event: ev.SessionEvent) -> None:
        raise RuntimeError("listener bug")

    store = SessionStore(tmp_path / "sessions")
    session = Session.start(loaded, SpyDriver(loaded), store=store, objectives=objectives())
    summary = session.run(on_event=broken)
    assert summary.state == "finished" and summary.frames == 2
    assert math.isfinite(summary.best_score)


def test_pause_requested_after_a_driver_fault_takes_effect_before_the_retry(
    tmp_path: Path,
) -> None:
    loaded = config(budget=3, sim={"fail_on_frame": 1})
    store = SessionStore(tmp_path / "sessions")
    session = Session.start(loaded, SpyDriver(loaded), store=store, objectives=objectives())
    control = SessionControl()

    def on_event(event: ev.SessionEvent) -> None:
        if isinstance(event, ev.Log) and "attempt 1/3 failed" in event.message:
            control.request_pause()  # what the daemon does on a worker watchdog fault
        if isinstance(event, ev.Paused):
            threading.Timer(0.2, control.resume).start()

    summary = session.run(control, on_event)
    assert summary.state == "finished" and summary.frames == 3
    frame_1 = [e.kind for e in store.open(session.id).ledger.events() if e.frame in (1, None)]
    start = frame_1.index(L.ERROR)
    assert frame_1[start : start + 4] == [L.ERROR, L.PAUSED, L.RESUMED, L.ACQUIRING]


class InterruptOnce:
    """An objective during which the process is interrupted once (after the TIFF is written)."""

    API_VERSION = "2.0"
    name, unit, direction, bounds = "resolution", "nm", "minimize", (40.0, 250.0)

    def __init__(self, interrupt_on: int | None) -> None:
        self.calls, self.interrupt_on, self.inner = 0, interrupt_on, ResolutionObjective()

    def evaluate(self, frame: Frame) -> float:
        self.calls += 1
        if self.calls - 1 == self.interrupt_on:
            raise KeyboardInterrupt
        return self.inner.evaluate(frame)


def test_a_frame_recorded_but_not_scored_is_scored_from_its_tiff_on_resume(
    tmp_path: Path,
) -> None:
    loaded = config(budget=4)
    store = SessionStore(tmp_path / "sessions")
    driver = SpyDriver(loaded)
    session = Session.start(loaded, driver, store=store, objectives=[InterruptOnce(2)])
    with pytest.raises(KeyboardInterrupt):
        session.run()
    session.close()
    assert store.open(session.id).history().frames[2].status == "acquired"
    again = SpyDriver(loaded)
    resumed = Session.resume(
        session.id, loaded, again, store=store, objectives=[InterruptOnce(None)]
    )
    summary = resumed.run()
    resumed.close()
    assert summary.frames == 4 and again.acquires == 1  # frame 2 was not exposed again
    history = store.open(session.id).history()
    assert [f.status for f in history.done_frames()] == ["told"] * 4
    assert len(history.frames[2].regions) == 1


def test_a_product_of_objectives_is_recorded_and_modelled_on_a_log_scale(tmp_path: Path) -> None:
    loaded = config(
        budget=7,
        objectives={
            "names": ["resolution", "bleaching"],
            "scalarisation": "product",
            "weights": {"bleaching": 4},
        },
        optimizer={"score_transform": "auto"},
    )
    session, summary, _events, store = run(loaded, SpyDriver(loaded), tmp_path)
    assert summary.frames == 7
    assert session.optimizer.settings.score_transform == "log"  # "auto" with a product
    scalariser = session.scalariser
    for record in store.open(session.id).history().done_frames():
        u_resolution = scalariser.utility("resolution", record.values["resolution"])
        u_bleaching = scalariser.utility("bleaching", record.values["bleaching"])
        assert record.combined == pytest.approx(u_resolution * u_bleaching**4)
