"""Caps hold on the value actually sent and applied; a refusal ends the session, not retried."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from stedloop.config import LoadedConfig, load_config
from stedloop.driver import AcquireRequest
from stedloop.drivers import create_driver
from stedloop.drivers.imspector import ImspectorDriver
from stedloop.drivers.imspector.fake_specpy import FakeSpecpy, noise_image_source
from stedloop.drivers.imspector.options import ImspectorOptions
from stedloop.drivers.simulator import SimulatorDriver
from stedloop.errors import ParameterRejected, SafetyCapExceeded
from stedloop.frame import Frame, Region
from stedloop.objectives.resolution import ResolutionObjective
from stedloop.params import ImagingParams, SafetyCaps
from stedloop.server.events import EventBus
from stedloop.server.sessions import SessionHost
from stedloop.session import Session
from stedloop.store import SessionStore
from stedloop.wire.protocol import ProtocolError, decode_request

CURRENT_DEP = "ExpControl/measurement/channels/0/lasers/6/power/calibrated"


def config(**sections: Any) -> LoadedConfig:
    overrides: dict[str, Any] = {
        "session": {"budget_frames": 3, "retry_delay_s": 0.0, "driver_retries": 2},
        "optimizer": {"random_seed": 5, "n_candidates": 200},
        "objectives": {"names": ["resolution"]},
        "drivers": {"simulator": {"sample_fields": 6, "field_px": 64}},
        "safety": {"max_depletion_mw": 100.0},
        "params": {"depletion_mw": {"min": 70.0, "max": 100.0}},
    }
    for name, table in sections.items():
        overrides[name] = {**overrides.get(name, {}), **table}
    return load_config(overrides=overrides)


class RecordingDriver:
    """The real simulator behind a hardware-boundary stand-in that can misbehave."""

    def __init__(self, loaded: LoadedConfig, *, applied_factor: float = 1.0, raises: Any = None):
        self.inner = create_driver(loaded.config)
        self.inner.connect()
        self.applied_factor = applied_factor
        self.raises = raises
        self.acquires = 0
        self.safe_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def acquire(self, request: AcquireRequest) -> Frame:
        self.acquires += 1
        if self.raises is not None:
            raise self.raises
        frame = self.inner.acquire(request)
        params = request.params
        applied = dataclasses.replace(
            params, depletion_mw=params.depletion_mw * self.applied_factor
        )
        return dataclasses.replace(frame, params=applied)

    def safe_state(self) -> None:
        self.safe_calls += 1
        self.inner.safe_state()


def run_session(loaded: LoadedConfig, driver: Any, tmp_path: Path) -> tuple[Any, Any]:
    store = SessionStore(tmp_path / "sessions")
    session = Session.start(loaded, driver, store=store, objectives=[ResolutionObjective()])
    summary = session.run()
    session.close()
    return summary, store.open(session.id, readonly=True).history()


def test_a_driver_applying_more_than_asked_is_stopped_at_its_first_frame(tmp_path: Path) -> None:
    loaded = config()
    driver = RecordingDriver(loaded, applied_factor=1.5)
    summary, history = run_session(loaded, driver, tmp_path)
    assert summary.state == "failed"
    assert "refused by the safety caps" in summary.stop_reason
    assert (
        "reports it applied" in summary.stop_reason
        and "max_depletion_mw=100" in summary.stop_reason
    )
    assert driver.acquires == 1  # not retried on fresh regions
    assert driver.safe_calls >= 1
    (error,) = history.frames[0].errors
    assert error.refused is True and error.will_retry is False


def test_a_cap_refusal_is_not_retried_and_fails_the_session(tmp_path: Path) -> None:
    loaded = config()
    driver = RecordingDriver(loaded, raises=SafetyCapExceeded("refused: light dose beyond the cap"))
    summary, _ = run_session(loaded, driver, tmp_path)
    assert (summary.state, driver.acquires) == ("failed", 1)


@pytest.mark.parametrize(
    "policy, state, acquires", [("stop", "failed", 1), ("continue", "finished", 3)]
)
def test_a_range_refusal_is_not_retried(
    tmp_path: Path, policy: str, state: str, acquires: int
) -> None:
    loaded = config(session={"on_driver_failure": policy})
    driver = RecordingDriver(loaded, raises=ParameterRejected("dwell_time_us outside the range"))
    summary, history = run_session(loaded, driver, tmp_path)
    assert (summary.state, driver.acquires) == (state, acquires)
    assert all(len(f.errors) == 1 for f in history.frames.values())


def test_base_driver_holds_the_reported_applied_values_to_the_caps() -> None:
    class Miscalibrated(SimulatorDriver):
        def _acquire(self, request: AcquireRequest) -> Frame:
            params = request.params
            frame = super()._acquire(request)
            return dataclasses.replace(
                frame, params=dataclasses.replace(params, depletion_mw=params.depletion_mw * 1.5)
            )

    loaded = config()
    options = SimulatorDriver.Options.model_validate({"field_px": 64, "sample_fields": 4})
    with (
        Miscalibrated(options, loaded.config.safety) as driver,
        pytest.raises(SafetyCapExceeded, match="applied, as the driver reports"),
    ):
        driver.acquire(AcquireRequest(ImagingParams(10.0, 5.0, 80.0), Region(0.0, 0.0, 64, 64)))


def test_imspector_checks_the_converted_value_before_it_is_sent() -> None:
    fake = FakeSpecpy(image_source=noise_image_source())
    options = ImspectorOptions(excitation_uw_at_full_scale=20.0, depletion_mw_at_full_scale=350.0)
    driver = ImspectorDriver(options, SafetyCaps(), specpy_module=fake, wait=lambda _s: None)
    driver.connect()
    calibration = driver._calibration
    correct = calibration.depletion_to_imspector
    # A conversion bug that sends 1.5x the power asked (300 mW asked -> 450 mW sent).
    calibration.depletion_to_imspector = lambda mw: correct(mw) * 1.5  # type: ignore[method-assign]
    fake.set_log.clear()
    with pytest.raises(SafetyCapExceeded, match="to be sent to configuration"):
        driver.acquire(AcquireRequest(ImagingParams(10.0, 5.0, 300.0), Region(0.0, 0.0, 224, 224)))
    assert [r for r in fake.set_log if r.path == CURRENT_DEP and r.value != 0.0] == []
    driver.close()


def test_a_value_at_the_cap_survives_the_unit_round_trip() -> None:
    # 100 mW -> % of a 77.7 mW full scale -> back is 100.00000000000003 mW: float round-off,
    # not a cap violation, so a proposal at the cap is not refused.
    fake = FakeSpecpy(image_source=noise_image_source())
    options = ImspectorOptions(excitation_uw_at_full_scale=20.0, depletion_mw_at_full_scale=77.7)
    caps = SafetyCaps(max_depletion_mw=100.0)
    driver = ImspectorDriver(options, caps, specpy_module=fake, wait=lambda _s: None)
    at_cap = ImagingParams(10.0, 5.0, 100.0)
    assert driver._as_sent(at_cap).depletion_mw > 100.0
    driver.check_sent(driver._as_sent(at_cap))
    with pytest.raises(SafetyCapExceeded):
        driver.check_sent(ImagingParams(10.0, 5.0, 100.0 * (1 + 1e-9)))


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1E400"])
def test_protocol_refuses_numbers_that_parse_to_infinity(number: str) -> None:
    payload = (
        '{"v":1,"id":"r1","method":"session.start","params":{"overrides":'
        f'{{"optimizer":{{"xi":{number}}}}}}}}}'
    ).encode()
    with pytest.raises(ProtocolError) as info:
        decode_request(payload, 1 << 20)
    assert info.value.code == "bad_json" and "not finite" in str(info.value)


def test_daemon_resume_takes_only_the_session_sections_of_a_ledger(tmp_path: Path) -> None:
    import sqlite3

    loaded = config(session={"budget_frames": 7})
    store = SessionStore(tmp_path / "sessions")
    session = Session.start(
        loaded, RecordingDriver(loaded), store=store, objectives=[ResolutionObjective()]
    )
    session.close()
    ledger = sqlite3.connect(session.folder / "ledger.sqlite")
    (payload,) = ledger.execute("SELECT payload FROM events WHERE kind = 'created'").fetchone()
    created = json.loads(payload)
    created["config"]["safety"] = {"max_depletion_mw": 1000.0}
    created["config"]["worker"] = {"python_executable": "/bin/sh"}
    ledger.execute("DROP TRIGGER events_no_update")
    ledger.execute("UPDATE events SET payload = ? WHERE kind = 'created'", (json.dumps(created),))
    ledger.commit()
    ledger.close()
    site = config()  # the daemon's site configuration: budget 3, caps 100 mW
    host = SessionHost(site, None, store, EventBus("test", 100))
    resumed = host._resume_config(session.id, {}, force=False)
    assert resumed.config.session.budget_frames == 7  # the session's own section
    assert resumed.config.safety == site.config.safety  # the site's, never the ledger's
    assert resumed.config.worker.python_executable is None
    with_client = host._resume_config(session.id, {"session": {"budget_frames": 9}}, force=False)
    assert with_client.config.session.budget_frames == 9


def test_a_worker_never_builds_its_driver_with_default_caps() -> None:
    from stedloop.errors import ConfigError
    from stedloop.worker.process import _build_driver

    spec = {"driver": "simulator", "options": {"field_px": 64, "sample_fields": 4}}
    with pytest.raises(ConfigError, match="no safety caps"):
        _build_driver(spec)
    driver = _build_driver({**spec, "caps": {"max_depletion_mw": 120.0}})
    assert driver.caps.max_depletion_mw == 120.0


def test_a_frame_in_flight_beyond_todays_caps_is_recorded_failed_not_redone(
    tmp_path: Path,
) -> None:
    then = config(
        safety={"max_depletion_mw": 350.0},
        params={"depletion_mw": {"min": 150.0, "max": 350.0}},
        session={"budget_frames": 4},
    )

    class StopsAtFrame2(RecordingDriver):
        def acquire(self, request: AcquireRequest) -> Frame:
            if self.acquires == 2:
                self.acquires += 1
                raise KeyboardInterrupt  # Ctrl-C in the middle of frame 2
            return super().acquire(request)

    store = SessionStore(tmp_path / "sessions")
    session = Session.start(
        then, StopsAtFrame2(then), store=store, objectives=[ResolutionObjective()]
    )
    with pytest.raises(KeyboardInterrupt):
        session.run()
    session.close()
    in_flight = store.open(session.id, readonly=True).history().in_flight()
    assert in_flight is not None and in_flight.params["depletion_mw"] >= 150.0

    now = config(session={"budget_frames": 4})  # site caps and space: 100 mW
    driver = RecordingDriver(now)
    resumed = Session.resume(
        session.id, now, driver, store=store, objectives=[ResolutionObjective()], force=True
    )
    summary = resumed.run()
    resumed.close()
    assert summary.state == "finished", summary.stop_reason
    history = store.open(session.id, readonly=True).history()
    skipped = history.frames[in_flight.frame]
    assert skipped.status == "failed" and not skipped.acquired
    assert "outside today's settings" in skipped.objective_errors["_reason"]
    applied = [
        f.acquired.params_applied["depletion_mw"]
        for f in history.frames.values()
        if f.acquired and f.frame > in_flight.frame
    ]
    assert applied and max(applied) <= 100.0


def test_driver_options_must_be_finite_whatever_the_plugin_allows() -> None:
    from stedloop.drivers import parse_driver_options
    from stedloop.errors import ConfigError

    class Lenient(BaseModel):  # a plugin's options model that forgot allow_inf_nan=False
        gain: float = 1.0
        limits: list[float] = [0.0, 1.0]

    class Plugin:
        Options = Lenient

    assert parse_driver_options(Plugin, "lenient", {"gain": 2.0}).gain == 2.0
    with pytest.raises(ConfigError, match=r"drivers\.lenient\.gain, drivers\.lenient\.limits\.1"):
        parse_driver_options(
            Plugin, "lenient", {"gain": float("inf"), "limits": [0.0, float("nan")]}
        )
