"""A session on the Imspector driver (fake specpy) keeps the raw .obf beside each frame,
whether the driver runs in the session's process or in a worker process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stedloop.config import load_config
from stedloop.instrument import open_driver
from stedloop.objectives.bleaching import BleachingObjective
from stedloop.session.runner import Session
from stedloop.store import SessionStore


@pytest.mark.parametrize("in_worker", [False, True], ids=["in-process", "in-worker"])
def test_raw_measurements_are_saved_next_to_the_session_frames(
    tmp_path: Path, in_worker: bool
) -> None:
    loaded = load_config(
        overrides={
            "driver": {"name": "imspector", "in_worker": in_worker},
            "drivers": {
                "imspector": {
                    "specpy_module": "stedloop.drivers.imspector.fake_specpy",
                    "excitation_uw_at_full_scale": 20.0,
                    "depletion_mw_at_full_scale": 350.0,
                }
            },
            "worker": {"python_executable": sys.executable, "standby": False},
            "session": {"budget_frames": 2, "retry_delay_s": 0.0},
            "optimizer": {"random_seed": 3, "n_candidates": 200},
            "objectives": {"names": ["bleaching"]},
        }
    )
    with open_driver(loaded.config, "a test") as opened:
        store = SessionStore(tmp_path / "sessions")
        session = Session.start(
            loaded, opened.driver, store=store, objectives=[BleachingObjective()]
        )
        summary = session.run()
        session.close()

    assert summary.frames == 2
    frames_dir = session.folder / "frames"
    tiffs = sorted(p.name for p in frames_dir.glob("*.ome.tif"))
    raws = sorted(p.name for p in frames_dir.glob("*.obf"))
    assert tiffs == ["0000.ome.tif", "0001.ome.tif"]
    # Every recorded frame has its three raw files, named by its frame number.
    assert raws == sorted(
        f"{n}.{role}.obf"
        for n in ("0000", "0001")
        for role in ("confocal_before", "sted", "confocal_after")
    )
