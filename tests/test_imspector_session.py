"""A session on the Imspector driver (fake specpy) keeps the raw .obf beside each frame."""

from __future__ import annotations

from pathlib import Path

from stedloop.config import load_config
from stedloop.drivers import create_driver
from stedloop.objectives.bleaching import BleachingObjective
from stedloop.session.runner import Session
from stedloop.store import SessionStore


def test_raw_measurements_are_saved_next_to_the_session_frames(tmp_path: Path) -> None:
    loaded = load_config(
        overrides={
            "driver": {"name": "imspector"},
            "drivers": {
                "imspector": {
                    "specpy_module": "stedloop.drivers.imspector.fake_specpy",
                    "excitation_uw_at_full_scale": 20.0,
                    "depletion_mw_at_full_scale": 350.0,
                }
            },
            "session": {"budget_frames": 2, "retry_delay_s": 0.0},
            "optimizer": {"random_seed": 3, "n_candidates": 200},
            "objectives": {"names": ["bleaching"]},
        }
    )
    driver = create_driver(loaded.config)
    driver.connect()
    store = SessionStore(tmp_path / "sessions")
    session = Session.start(loaded, driver, store=store, objectives=[BleachingObjective()])
    summary = session.run()
    session.close()
    driver.close()

    assert summary.frames == 2
    frames_dir = session.folder / "frames"
    tiffs = sorted(p.name for p in frames_dir.glob("*.ome.tif"))
    raws = sorted(p.name for p in frames_dir.glob("*.obf"))
    assert tiffs == ["0000.ome.tif", "0001.ome.tif"]
    # Every raw file belongs to a recorded frame number.
    assert raws, "the driver saved no raw measurement"
    assert {name.split(".")[0] for name in raws} == {"0000", "0001"}
