"""The optimizer learns from the values the driver reports as applied, live and on resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from stedloop.config import LoadedConfig, load_config
from stedloop.driver import AcquireRequest
from stedloop.drivers import create_driver
from stedloop.frame import Frame
from stedloop.objectives.resolution import ResolutionObjective
from stedloop.params import ImagingParams, ParamSpace
from stedloop.session import Session
from stedloop.session.applied import told_params
from stedloop.store import SessionStore


def config(budget_frames: int) -> LoadedConfig:
    return load_config(
        overrides={
            "session": {"budget_frames": budget_frames, "retry_delay_s": 0.0},
            "optimizer": {"random_seed": 5, "n_candidates": 200},
            "objectives": {"names": ["resolution"]},
            "drivers": {"simulator": {"sample_fields": 6, "field_px": 64}},
            "safety": {"max_depletion_mw": 100.0},
            "params": {"depletion_mw": {"min": 20.0, "max": 90.0}},
        }
    )


class RoundingDriver:
    """The simulator behind an instrument that applies 2 % less depletion than asked."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.inner = create_driver(loaded.config)
        self.inner.connect()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def acquire(self, request: AcquireRequest) -> Frame:
        frame = self.inner.acquire(request)
        asked = request.params
        applied = dataclasses.replace(asked, depletion_mw=round(asked.depletion_mw * 0.98, 1))
        return dataclasses.replace(frame, params=applied)


def test_the_optimizer_is_told_the_applied_values_and_resume_rebuilds_them(
    tmp_path: Path,
) -> None:
    store = SessionStore(tmp_path / "sessions")
    loaded = config(budget_frames=3)
    driver = RoundingDriver(loaded)
    session = Session.start(loaded, driver, store=store, objectives=[ResolutionObjective()])
    summary = session.run()
    session.close()
    assert summary.frames == 3
    live_told = list(session.optimizer._params_told)
    history = store.open(session.id, readonly=True).history()
    for frame_no, told in zip(sorted(history.frames), live_told, strict=True):
        record = history.frames[frame_no]
        assert record.acquired is not None
        applied = record.acquired.params_applied
        assert told.depletion_mw == applied["depletion_mw"] != record.params["depletion_mw"]
    # The best point shown to a user stays the one to ask for (the request).
    assert summary.best_params in [history.frames[n].params for n in history.frames]

    resumed = Session.resume(
        session.id, config(budget_frames=4), driver, store=store, objectives=[ResolutionObjective()]
    )
    try:
        assert resumed.optimizer._params_told == live_told
    finally:
        resumed.close()


def test_applied_values_are_kept_inside_the_search_space() -> None:
    space = ParamSpace.model_validate(
        {
            "dwell_time_us": {"min": 1.0, "max": 10.0},
            "depletion_mw": {"min": 0.0, "max": 100.0, "grid": [0.0, 50.0, 100.0]},
        }
    )
    asked = ImagingParams(10.0, 5.0, 50.0)
    applied = ImagingParams(10.04, 4.97, 48.5)  # dwell rounded past the box, depletion off-grid
    assert told_params(space, asked, applied) == ImagingParams(10.0, 4.97, 50.0)
    outside = ImagingParams(20.0, 5.0, 50.0)  # only after a forced resume with another space
    assert told_params(space, outside, applied) == outside
