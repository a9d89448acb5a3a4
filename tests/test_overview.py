"""Regions chosen from a confocal overview (issue 19, item 2): the driver ability, the
simulator's patchy samples, the picker, the session's supply, the ledger, the caps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stedloop import events as ev
from stedloop.config import load_config
from stedloop.driver import OverviewRequest, takes_overviews
from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions
from stedloop.drivers.simulator.structures import generate
from stedloop.errors import ConfigError, RegionError, SafetyCapExceeded
from stedloop.frame import Overview, Region
from stedloop.params import ImagingParams, SafetyCaps
from stedloop.session import Session
from stedloop.session.overview_picker import Bands, pick_regions
from stedloop.store import SessionStore
from stedloop.store.overviews import read_overview
from tests.test_session_loop import SpyDriver, config, objectives

PATCHY = {"sample_fields": 12, "empty_area_fraction": 0.4, "sparse_area_fraction": 0.3}
PATCHY_SMALL = {**PATCHY, "patch_size_um": 4.0}
OVERVIEW_ON = {"overview": {"enabled": True, "size_um": 8.0}}


def simulator(caps: SafetyCaps | None = None, **options: Any) -> SimulatorDriver:
    opts = {"seed": 3, "field_px": 64, **options}
    driver = SimulatorDriver(SimulatorOptions(**opts), caps or SafetyCaps())
    driver.connect()
    return driver


# -- the simulator's sample and overview --------------------------------------------------------
def test_a_sample_without_patches_is_the_same_as_before() -> None:
    driver = simulator(sample_fields=2)
    opts = driver.opts
    size = opts.sample_fields * opts.field_px + 2 * driver.RADIUS_PX
    expected = generate(opts.structure, size, opts.pixel_size_nm, opts.seed, opts.label_density)
    assert np.array_equal(driver.fluorophore_map(), expected[20:-20, 20:-20])


def test_a_patchy_sample_has_empty_and_sparse_areas() -> None:
    plain = simulator(sample_fields=12).fluorophore_map()
    patchy = simulator(**PATCHY).fluorophore_map()
    assert patchy.sum() < 0.6 * plain.sum()
    # Fields (64 px) with no label at all: about the empty share, never in the plain sample.
    fields = patchy.reshape(12, 64, 12, 64).sum(axis=(1, 3))
    plain_fields = plain.reshape(12, 64, 12, 64).sum(axis=(1, 3))
    assert (plain_fields > 0).all()
    assert 0.15 <= float((fields == 0).mean()) <= 0.6


def test_the_overview_sees_the_sample_and_bleaches_little() -> None:
    driver = simulator(**PATCHY)
    before = driver.fluorophore_map()
    request = OverviewRequest(0.0, 0.0, 10.0, 8.0, 100.0, 5.0, 5.0)
    overview = driver.acquire_overview(request)
    assert overview.image.shape == (80, 100) == request.shape_px
    assert overview.pixel_size_nm == 100 and overview.params == request.params
    # The overview's bright pixels lie where the fluorophores are (5 x 5 sample pixels each).
    binned = before[:400, :500].reshape(80, 5, 100, 5).sum(axis=(1, 3))
    assert np.corrcoef(binned.ravel(), overview.image.ravel())[0, 1] > 0.5
    after = driver.fluorophore_map()
    assert 0.98 < after.sum() / before.sum() <= 1.0  # a low-dose scan
    assert driver.laser_levels == {"excitation_uw": 0.0, "depletion_mw": 0.0}


def test_an_overview_beyond_the_caps_is_refused_before_the_lasers_move() -> None:
    caps = SafetyCaps(max_light_dose_per_pixel_uj=1e-4)  # 5 µs x 5 µW = 2.5e-5 µJ; 50 µs: 2.5e-4
    driver = simulator(caps, sample_fields=2)
    before = driver.fluorophore_map()
    with pytest.raises(SafetyCapExceeded, match="max_light_dose_per_pixel_uj"):
        driver.acquire_overview(OverviewRequest(0, 0, 2.0, 2.0, 100.0, 50.0, 5.0))
    assert np.array_equal(driver.fluorophore_map(), before)
    driver.acquire_overview(OverviewRequest(0, 0, 2.0, 2.0, 100.0, 5.0, 5.0))  # within: taken


def test_an_overview_outside_the_sample_is_refused() -> None:
    driver = simulator(sample_fields=2)
    with pytest.raises(RegionError, match="outside the sample"):
        driver.acquire_overview(OverviewRequest(1.0, 0.0, 2.56, 2.0, 100.0, 5.0, 5.0))


def test_the_ability_is_said_and_can_be_switched_off() -> None:
    on, off = simulator(sample_fields=2), simulator(sample_fields=2, overviews=False)
    assert takes_overviews(on, on.describe())
    assert not takes_overviews(off, off.describe())


# -- the picker ----------------------------------------------------------------------------------
def _overview(image: np.ndarray) -> Overview:
    return Overview(image, 0.0, 0.0, 100.0, ImagingParams(5.0, 5.0, 0.0), 0.0, 1.0)


def _striped(rng: np.random.Generator) -> np.ndarray:
    """Background everywhere; filaments (every 4th row) in the left half only."""
    image = rng.poisson(0.2, (64, 128)).astype(np.uint16)
    image[::4, :64] += rng.poisson(30, (16, 64)).astype(np.uint16)
    return image


BANDS = Bands((0.05, 0.8), (0.15, 4.0), threshold_sigma=4.0, margin_um=1.0)


def test_regions_are_picked_where_the_structure_is() -> None:
    picks = pick_regions(_overview(_striped(np.random.default_rng(0))), (64, 64), 20.0, BANDS)
    assert picks.regions and picks.candidates > len(picks.regions)
    for pick in picks.regions:
        assert pick.region.x_um + 1.28 <= 6.4 + 0.2  # within the structured half (+ smoothing)
        assert 0.05 <= pick.foreground_fraction <= 0.8
    boxes = [(p.region.x_um, p.region.y_um) for p in picks.regions]
    for i, (x, y) in enumerate(boxes):  # no two picked regions within the margin of each other
        for x2, y2 in boxes[i + 1 :]:
            assert abs(x - x2) >= 1.28 + 1.0 - 1e-9 or abs(y - y2) >= 1.28 + 1.0 - 1e-9


def test_no_region_is_picked_from_an_empty_overview() -> None:
    image = np.random.default_rng(1).poisson(0.2, (64, 64)).astype(np.uint16)
    picks = pick_regions(_overview(image), (64, 64), 20.0, BANDS)
    assert picks.regions == [] and picks.in_band == 0


def test_the_bands_and_the_margin_from_exposed_regions_hold() -> None:
    overview = _overview(_striped(np.random.default_rng(2)))
    dense_only = Bands((0.9, 1.0), (0.0, 100.0))
    assert pick_regions(overview, (64, 64), 20.0, dense_only).regions == []  # stripes: ~25 %
    exposed = [Region(0.0, 0.0, 64, 64)]
    picks = pick_regions(overview, (64, 64), 20.0, BANDS, exposed)
    for pick in picks.regions:
        near_x = pick.region.x_um < 1.28 + 1.0 - 1e-9
        near_y = pick.region.y_um < 1.28 + 1.0 - 1e-9
        assert not (near_x and near_y), pick.region


# -- config --------------------------------------------------------------------------------------
def test_overview_settings_beyond_the_caps_are_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"session.overview: .*max_light_dose_per_pixel_uj"):
        load_config(
            overrides={
                "safety": {"max_light_dose_per_pixel_uj": 1e-4},
                "params": {
                    "dwell_time_us": {"min": 1, "max": 5},
                    "depletion_mw": {"min": 0, "max": 0.01},
                },
                "session": {"overview": {"dwell_time_us": 50.0, "excitation_uw": 5.0}},
            }
        )


def test_a_band_upside_down_is_refused() -> None:
    with pytest.raises(ConfigError, match="foreground_fraction"):
        load_config(overrides={"session": {"overview": {"foreground_fraction": [0.5, 0.1]}}})


# -- the session ---------------------------------------------------------------------------------
def _run(tmp_path: Path, budget: int, sim: dict[str, Any], session: dict[str, Any], **kw: Any):
    loaded = config(budget=budget, sim=sim, session=session)
    driver = kw.pop("driver", None) or SpyDriver(loaded)
    store = SessionStore(tmp_path / "sessions")
    created = Session.start(loaded, driver, store=store, objectives=objectives())
    heard: list[ev.SessionEvent] = []
    summary = created.run(on_event=heard.append)
    created.close()
    return created, summary, heard, store, driver


def test_a_session_images_the_regions_its_overviews_picked(tmp_path: Path) -> None:
    session, summary, heard, store, driver = _run(tmp_path, 8, PATCHY_SMALL, OVERVIEW_ON)
    assert summary.state == "finished" and summary.frames == 8
    history = store.open(session.id, readonly=True).history()
    overviews = [e for e in history.events if isinstance(e, ev.OverviewTaken)]
    assert overviews and overviews[0].before_frame == 0 and overviews[0].overview == 0
    kinds = [e.kind for e in history.events]
    assert kinds.index("overview") < kinds.index("acquiring")  # before the first frame
    picked = [Region.from_dict(r) for o in overviews for r in o.regions]
    regions = [Region.from_dict(r) for f in history.frames.values() for r in f.regions]
    assert regions and all(r in picked for r in regions)
    for o in overviews:  # the TIFF is there and is the overview the event describes
        assert o.tiff is not None
        image = read_overview(session.folder / o.tiff)
        assert image.x_um == o.area["x_um"] and image.pixel_size_nm == o.pixel_size_nm
        assert o.light_dose_per_pixel_uj == pytest.approx(5.0 * 5.0e-6)
    # Every frame region keeps the margin from every other.
    for i, a in enumerate(regions):
        for b in regions[i + 1 :]:
            apart_x = abs(a.x_um - b.x_um) >= 1.28 + 1.0 - 1e-6
            apart_y = abs(a.y_um - b.y_um) >= 1.28 + 1.0 - 1e-6
            assert apart_x or apart_y, (a, b)
    # On the patchy sample, the picked regions hold labels; the tiling's first ones often not.
    inner = driver.inner
    assert all(inner.fluorophore_map(r).sum() > 0 for r in regions)
    assert any(isinstance(e, ev.OverviewTaken) for e in heard)  # published to listeners too


def test_a_driver_without_the_ability_keeps_the_tiling(tmp_path: Path) -> None:
    sim = {**PATCHY_SMALL, "overviews": False}
    session, summary, _, store, _ = _run(tmp_path, 3, sim, OVERVIEW_ON)
    assert summary.state == "finished"
    history = store.open(session.id, readonly=True).history()
    assert not [e for e in history.events if isinstance(e, ev.OverviewTaken)]
    (opened,) = [e for e in history.events if isinstance(e, ev.Opened)]
    assert any("takes no overviews" in n for n in opened.notes)
    first = [Region.from_dict(r) for f in history.frames.values() for r in f.regions]
    assert first[0] == Region(0.0, 0.0, 64, 64)  # raster order from the origin


def test_overviews_are_off_by_default(tmp_path: Path) -> None:
    session, _, _, store, _ = _run(tmp_path, 2, PATCHY_SMALL, {})
    history = store.open(session.id, readonly=True).history()
    assert "overview" not in [e.kind for e in history.events]


def test_an_overview_the_driver_reports_beyond_the_caps_ends_the_session(tmp_path: Path) -> None:
    loaded = config(budget=3, sim=PATCHY_SMALL, session=OVERVIEW_ON)

    class Hot(SpyDriver):
        def acquire_overview(self, request: OverviewRequest) -> Overview:
            overview = self.inner.acquire_overview(request)
            hot = ImagingParams(overview.params.dwell_time_us, 30.0, 0.0)  # beyond 25 µW
            return Overview(overview.image, 0.0, 0.0, 100.0, hot, 0.0, 1.0)

    session, summary, _, store, driver = _run(
        tmp_path, 3, PATCHY_SMALL, OVERVIEW_ON, driver=Hot(loaded)
    )
    assert summary.state == "failed" and "refused by the safety caps" in summary.stop_reason
    assert driver.acquires == 0  # no frame was exposed
    history = store.open(session.id, readonly=True).history()
    errors = [e for e in history.events if isinstance(e, ev.Error) and e.stage == "overview"]
    assert errors and errors[0].refused


def test_a_failing_overview_hands_over_to_the_tiling(tmp_path: Path) -> None:
    loaded = config(budget=2, sim=PATCHY_SMALL, session=OVERVIEW_ON)

    class Broken(SpyDriver):
        def acquire_overview(self, request: OverviewRequest) -> Overview:
            raise RuntimeError("scanner jammed")

    session, summary, heard, store, _ = _run(
        tmp_path, 2, PATCHY_SMALL, OVERVIEW_ON, driver=Broken(loaded)
    )
    assert summary.state == "finished" and summary.frames == 2
    history = store.open(session.id, readonly=True).history()
    errors = [e for e in history.events if isinstance(e, ev.Error) and e.stage == "overview"]
    assert errors and "scanner jammed" in errors[0].error and not errors[0].refused
    assert any(isinstance(e, ev.Log) and "tiling" in e.message for e in heard)


def test_a_resume_continues_with_the_regions_the_last_overview_left(tmp_path: Path) -> None:
    session, _, _, store, _ = _run(tmp_path, 2, PATCHY_SMALL, OVERVIEW_ON)
    first = store.open(session.id, readonly=True).history()
    (overview,) = [e for e in first.events if isinstance(e, ev.OverviewTaken)]
    assert len(overview.regions) >= 4  # regions left for the resumed run
    loaded = config(budget=4, sim=PATCHY_SMALL, session=OVERVIEW_ON)
    resumed = Session.resume(
        session.id, loaded, SpyDriver(loaded), store=store, objectives=objectives()
    )
    resumed.run()
    resumed.close()
    after = store.open(session.id, readonly=True).history()
    assert [e for e in after.events if isinstance(e, ev.OverviewTaken)] == [overview]
    picked = [Region.from_dict(r) for r in overview.regions]
    regions = [Region.from_dict(r) for f in after.frames.values() for r in f.regions]
    assert len(regions) == 4 and regions == picked[:4]


# -- through the driver worker ---------------------------------------------------------------------
def test_an_overview_crosses_the_worker_whole_and_caps_are_checked_first() -> None:
    from tests.worker_helpers import simulator_worker

    request = OverviewRequest(0.0, 0.0, 4.0, 3.0, 100.0, 5.0, 5.0)
    worker = simulator_worker({"sample_fields": 2, "field_px": 224})
    try:
        worker.connect()
        assert takes_overviews(worker, worker.describe())
        crossed = worker.acquire_overview(request)
        local = simulator(sample_fields=2, field_px=224).acquire_overview(request)
        assert np.array_equal(crossed.image, local.image) and crossed.params == local.params
        assert (crossed.x_um, crossed.pixel_size_nm) == (local.x_um, local.pixel_size_nm)
        with pytest.raises(SafetyCapExceeded):  # refused in this process, before the worker
            worker.acquire_overview(OverviewRequest(0.0, 0.0, 4.0, 3.0, 100.0, 5.0, 30.0))
    finally:
        worker.close()
    off = simulator_worker({"sample_fields": 2, "overviews": False})
    try:
        off.connect()
        assert not takes_overviews(off, off.describe())
    finally:
        off.close()


# -- show it: session show and the export ------------------------------------------------------
OVERVIEW_CONFIG = """
[objectives]
names = ["resolution", "bleaching"]

[optimizer]
n_candidates = 300

[session]
retry_delay_s = 0.0

[session.overview]
enabled = true
size_um = 8.0

[drivers.simulator]
field_px = 64
sample_fields = 12
empty_area_fraction = 0.4
sparse_area_fraction = 0.3
patch_size_um = 4.0
"""


def test_optimize_show_and_export_say_where_the_frames_went(
    tmp_path: Path, isolated_home: Path
) -> None:
    import json

    from tests.test_session_cli import stedloop

    cfg = tmp_path / "site.toml"
    cfg.write_text(OVERVIEW_CONFIG)
    done = stedloop(
        "optimize", "-c", str(cfg), "--budget", "4", "--seed", "5", "--json", home=isolated_home
    )
    assert done.returncode == 0, done.stderr
    session_id = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")][-1]["id"]
    shown = json.loads(stedloop("session", "show", session_id, "--json", home=isolated_home).stdout)
    (first, *_) = shown["overviews"]
    assert first["overview"] == 0 and first["before_frame"] == 0 and first["regions_picked"] >= 4
    assert first["frames"] == [0, 1, 2, 3] and first["tiff"] == "overviews/0000.tif"
    text = stedloop("session", "show", session_id, home=isolated_home).stdout
    assert "overview 0 (before frame 0): 8 x 8 µm at (0, 0) µm" in text and "frames 0-3" in text
    out = tmp_path / "export"
    exported = stedloop("session", "export", session_id, "--out", str(out), home=isolated_home)
    assert exported.returncode == 0, exported.stderr
    figure = out / "overview_0000.png"
    assert figure.is_file() and str(figure) in exported.stdout
    from matplotlib.image import imread

    pixels = imread(figure)
    assert pixels.shape[0] > 500 and pixels[..., :3].std() > 0.05  # a picture, not a blank


# -- through the daemon --------------------------------------------------------------------------
def test_a_daemon_session_takes_overviews_and_refuses_them_beyond_the_caps(
    tmp_path: Path,
) -> None:
    from stedloop.client import Client, DaemonError
    from stedloop.client.local_daemon import stop_daemon
    from tests.test_daemon_e2e import follow_until_end, spawn

    process, ready = spawn(tmp_path / "home")
    try:
        with Client(ready["request_address"]) as client:
            overview = {"enabled": True, "size_um": 6.0}
            started = client.call(
                "session.start", budget_frames=3, overrides={"session": {"overview": overview}}
            )
            session_id = started["session_id"]
            events = follow_until_end(client, ready, session_id)
            assert events[-1]["data"]["state"] == "finished"
            logs = [e["data"]["message"] for e in events if e["topic"] == "log"]
            assert any(m.startswith("overview 0: ") for m in logs)
            with pytest.raises(DaemonError) as refused:
                hot = {**overview, "excitation_uw": 30.0}  # the site's cap is 25 µW
                client.call(
                    "session.start", budget_frames=3, overrides={"session": {"overview": hot}}
                )
            assert "max_excitation_uw" in str(refused.value)
    finally:
        assert stop_daemon(process) == 0
    record = SessionStore(tmp_path / "home" / "sessions").open(session_id, readonly=True)
    try:
        history = record.history()
    finally:
        record.close()
    overviews = [e for e in history.events if isinstance(e, ev.OverviewTaken)]
    assert overviews and (record.folder / str(overviews[0].tiff)).is_file()
    picked = [Region.from_dict(r) for o in overviews for r in o.regions]
    assert all(Region.from_dict(r) in picked for f in history.frames.values() for r in f.regions)
