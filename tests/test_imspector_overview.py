"""The Imspector driver's overview configuration, against the fake specpy (no hardware)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stedloop import events as ev
from stedloop.config import load_config
from stedloop.driver import OverviewRequest, takes_overviews
from stedloop.drivers.imspector import ImspectorDriver, ImspectorOptions
from stedloop.drivers.imspector.fake_specpy import FakeSpecpy
from stedloop.errors import DriverError, SafetyCapExceeded
from stedloop.frame import Region
from stedloop.objectives.bleaching import BleachingObjective
from stedloop.params import SafetyCaps
from stedloop.session.runner import Session
from stedloop.store import SessionStore

EXC = "ExpControl/measurement/channels/0/lasers/5/power/calibrated"
DEP = "ExpControl/measurement/channels/0/lasers/6/power/calibrated"
DWELL = "ExpControl/measurement/pixel_steps/step_duration/0"
CONFIGURATIONS = ("Confocal", "STED", "Overview")
REQUEST = OverviewRequest(2.0, 1.0, 8.0, 6.0, 100.0, 5.0, 5.0)
CALIBRATION = {"excitation_uw_at_full_scale": 20.0, "depletion_mw_at_full_scale": 350.0}


def make_driver(
    fake: FakeSpecpy, caps: SafetyCaps | None = None, **options: Any
) -> ImspectorDriver:
    values = {**CALIBRATION, "overview_configuration": "Overview", **options}
    return ImspectorDriver(ImspectorOptions(**values), caps or SafetyCaps(), specpy_module=fake)


def lasers_off(fake: FakeSpecpy) -> bool:
    return all(fake.value(n, EXC) == 0.0 and fake.value(n, DEP) == 0.0 for n in CONFIGURATIONS)


def test_an_overview_is_scanned_in_its_configuration_and_the_lasers_go_off() -> None:
    fake = FakeSpecpy(configurations=CONFIGURATIONS)
    with make_driver(fake) as driver:
        assert takes_overviews(driver, driver.describe())
        fake.set_log.clear()
        overview = driver.acquire_overview(REQUEST)
        assert fake.run_log == ["Overview"]
        lit = {r.configuration for r in fake.set_log if r.path == EXC and r.value != 0}
        assert lit == {"Overview"}  # the frames' configurations are left alone
        sent = {}
        for record in fake.set_log:  # the values set before the scan (safe_state comes after)
            if record.configuration == "Overview" and record.path not in sent:
                sent[record.path] = record.value
        assert sent[DWELL] == pytest.approx(5e-6) and sent[EXC] == pytest.approx(25.0)
        assert sent[DEP] == 0.0  # confocal: no depletion
        assert overview.image.shape == (60, 80) and overview.pixel_size_nm == pytest.approx(100)
        assert (overview.x_um, overview.y_um) == (2.0, 1.0)
        assert overview.params.depletion_mw == 0 and overview.params.excitation_uw == pytest.approx(
            5
        )
        assert overview.image.sum() > 0  # the simulated sample behind the fake
        assert lasers_off(fake)  # safe afterwards, in every configuration


def test_an_overview_beyond_the_caps_never_reaches_imspector() -> None:
    fake = FakeSpecpy(configurations=CONFIGURATIONS)
    with make_driver(fake, SafetyCaps(max_excitation_uw=4.0)) as driver:
        fake.set_log.clear()
        with pytest.raises(SafetyCapExceeded, match="max_excitation_uw"):
            driver.acquire_overview(REQUEST)
        assert fake.run_log == []
        assert all(r.value == 0.0 for r in fake.set_log if r.path in (EXC, DEP))


def test_without_an_overview_configuration_the_ability_is_absent() -> None:
    fake = FakeSpecpy()
    with make_driver(fake, overview_configuration=None) as driver:
        assert not takes_overviews(driver, driver.describe())
        with pytest.raises(DriverError, match="overview_configuration"):
            driver.acquire_overview(REQUEST)


def test_a_missing_overview_configuration_is_named_at_connect() -> None:
    driver = make_driver(FakeSpecpy(), overview_configuration="Overview")
    with pytest.raises(DriverError, match="'Overview'"):
        driver.connect()


def test_a_session_on_imspector_picks_its_regions_from_overviews(tmp_path: Path) -> None:
    fake = FakeSpecpy(configurations=CONFIGURATIONS)
    options = {"sample_extent_um": (35.84, 35.84), "field_px": 224}
    loaded = load_config(
        overrides={
            "driver": {"name": "imspector"},
            "drivers": {
                "imspector": {**CALIBRATION, "overview_configuration": "Overview", **options}
            },
            "session": {
                "budget_frames": 3,
                "retry_delay_s": 0.0,
                "overview": {"enabled": True, "size_um": 18.0},
            },
            "optimizer": {"random_seed": 3, "n_candidates": 200},
            "objectives": {"names": ["bleaching"]},
        }
    )
    with make_driver(fake, loaded.config.safety, **options) as driver:
        store = SessionStore(tmp_path / "sessions")
        session = Session.start(loaded, driver, store=store, objectives=[BleachingObjective()])
        summary = session.run()
        session.close()
    assert summary.frames == 3, summary.stop_reason
    history = store.open(session.id, readonly=True).history()
    overviews = [e for e in history.events if isinstance(e, ev.OverviewTaken)]
    assert overviews and (session.folder / str(overviews[0].tiff)).is_file()
    picked = [Region.from_dict(r) for o in overviews for r in o.regions]
    regions = [Region.from_dict(r) for f in history.frames.values() for r in f.regions]
    assert regions and all(r in picked for r in regions)
    assert fake.run_log[0] == "Overview" and lasers_off(fake)
    assert not np.isnan(summary.best_score or 0.0)
