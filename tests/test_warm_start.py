"""Warm start from earlier sessions (issue 19, item 1): real simulator sessions, real ledgers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_stedloop
from test_session_loop import SpyDriver, config, objectives

from stedloop.config import LoadedConfig
from stedloop.config.schema import OptimizerSection
from stedloop.errors import ConfigError
from stedloop.optimize import BayesianOptimizer, SearchSpace
from stedloop.optimize.prior import PRIOR_DESIGN_POINTS, PriorObservation, prior_design
from stedloop.params import ImagingParams, ParamSpace, SafetyCaps
from stedloop.session import Session
from stedloop.session.warm_start import observations
from stedloop.store import SessionNotFound, SessionStore
from stedloop.store.export import frame_rows, summary


def session_run(
    loaded: LoadedConfig,
    store: SessionStore,
    warm_from: list[str] | None = None,
    interrupt_on: int | None = None,
) -> Session:
    session = Session.start(
        loaded,
        SpyDriver(loaded, interrupt_on),
        store=store,
        objectives=objectives(),
        warm_from=warm_from or [],
    )
    try:
        session.run()
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
    return session


def history(store: SessionStore, session_id: str) -> Any:
    record = store.open(session_id, readonly=True)
    try:
        return record.history()
    finally:
        record.close()


def proposals(store: SessionStore, session_id: str) -> list[tuple[dict[str, float], str]]:
    frames = history(store, session_id).frames
    return [(frames[k].params, frames[k].source) for k in sorted(frames)]


# -- the prior (stedloop.optimize.prior) ---------------------------------------------------
def test_prior_design_takes_the_best_settings_inside_today_caps_apart() -> None:
    caps = SafetyCaps(max_light_dose_per_pixel_uj=5.0)
    space = SearchSpace(ParamSpace(), caps)
    best = ImagingParams(2.0, 5.0, 100.0)  # 0.21 µJ
    near = ImagingParams(2.2, 5.0, 110.0)
    too_much = ImagingParams(50.0, 5.0, 200.0)  # 10.25 µJ: beyond today's cap
    other = ImagingParams(80.0, 1.0, 10.0)
    observations = [PriorObservation("a", 0, too_much, 0.99)]
    observations += [PriorObservation("a", 1, best, 0.9), PriorObservation("a", 2, near, 0.88)]
    observations += [PriorObservation("a", 3, other, 0.85)]
    observations += [
        PriorObservation("a", 4 + i, ImagingParams(70.0 + i, 16.0 + i, 20.0), 0.1) for i in range(3)
    ]
    chosen = prior_design(space, OptimizerSection(), observations, n_points=2)
    # the best, then the next best that is not (almost) the same setting
    assert [o.frame for o in chosen] == [1, 3]
    assert all(o.params != too_much for o in chosen)
    assert all(caps.allows(o.params) for o in chosen)


def test_optimizer_proposes_prior_points_first_and_never_beyond_caps() -> None:
    caps = SafetyCaps(max_light_dose_per_pixel_uj=5.0)
    space = SearchSpace(ParamSpace(), caps)
    settings = OptimizerSection(n_initial_points=4, n_candidates=200)
    good = ImagingParams(2.0, 5.0, 100.0)
    beyond = ImagingParams(50.0, 5.0, 200.0)  # a prior point today's caps refuse
    outside = ImagingParams(500.0, 5.0, 100.0)  # outside today's box
    optimizer = BayesianOptimizer(space, settings, seed=1, prior_points=[beyond, good, outside])
    first = optimizer.ask(0)
    assert first.source == "prior" and first.params == good
    sources = [optimizer.ask(k).source for k in range(1, 4)]
    assert sources == ["design", "design", "design"]
    cold = BayesianOptimizer(space, settings, seed=1)
    # the rest of the warm-up is the cold design's first points
    assert [optimizer.ask(k).params for k in (1, 2, 3)] == [cold.ask(k).params for k in (0, 1, 2)]


# -- sessions --------------------------------------------------------------------------------
def test_a_session_warm_starts_from_a_real_ledger_and_says_where_each_prior_came_from(
    tmp_path: Path,
) -> None:
    store = SessionStore(tmp_path / "sessions")
    loaded = config(budget=6)
    earlier = session_run(loaded, store)
    warm = session_run(config(budget=4, optimizer={"random_seed": 11}), store, [earlier.id[:12]])
    events = list(store.open(warm.id, readonly=True).ledger.events())
    assert [e.kind for e in events[:3]] == ["created", "warm_start", "opened"]
    recorded = history(store, warm.id)
    event = recorded.warm_start
    assert event is not None and event.sessions == [earlier.id] and not event.auto
    told = {f.frame: f for f in history(store, earlier.id).told_frames()}
    assert event.observations == len(told)
    assert len(event.prior_points) == PRIOR_DESIGN_POINTS == 2
    for frame_no, point in enumerate(event.prior_points):
        origin = told[point["frame"]]
        assert point["params"] == origin.acquired.params_applied
        assert recorded.frames[frame_no].source == "prior"
        assert recorded.frames[frame_no].params == point["params"]
        assert recorded.prior_origin(frame_no) == f"{earlier.id}#{point['frame']}"
    # the earlier session's best-scored frame comes first
    best = max(told.values(), key=lambda f: f.combined)
    assert event.prior_points[0]["frame"] == best.frame
    assert recorded.frames[2].source == "design"
    rows = frame_rows(recorded)
    assert rows[1]["prior_from"] == f"{earlier.id}#{event.prior_points[1]['frame']}"
    assert rows[2]["prior_from"] is None
    info = summary(recorded)
    assert info["warm_start"]["sessions"] == [earlier.id]
    json.dumps(info)  # what `session show --json` and the export print


def test_auto_takes_the_most_recent_comparable_sessions_only(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions")
    actin = session_run(config(budget=3), store)
    session_run(config(budget=3, sim={"structure": "tubulin"}), store)  # other structure
    session_run(config(budget=3, params={"depletion_mw": {"max": 200.0}}), store)  # other space
    labelled = session_run(config(budget=3, session={"structure": "actin"}), store)
    warm = session_run(config(budget=2), store, ["auto"])
    event = history(store, warm.id).warm_start
    assert event is not None and event.auto
    # the labelled session counts as actin too (its label equals the simulator's structure)
    assert event.sessions == [labelled.id, actin.id]
    assert event.structure == "actin"


def test_auto_without_comparable_sessions_starts_cold_and_says_so(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions")
    session_run(config(budget=2, sim={"structure": "tubulin"}), store)
    loaded = config(budget=2)
    session = Session.start(
        loaded, SpyDriver(loaded), store=store, objectives=objectives(), warm_from=["auto"]
    )
    session.close()
    assert session.warm_start is None
    assert any("no comparable earlier session" in note for note in session.warnings)


def test_bad_warm_start_input_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions")
    tubulin = session_run(config(budget=2, sim={"structure": "tubulin"}), store)
    loaded = config(budget=2)
    count = len(store.list())
    with pytest.raises(SessionNotFound, match="no session 'nope'"):
        Session.start(loaded, SpyDriver(loaded), store=store, warm_from=["nope"])
    with pytest.raises(ConfigError, match="structure 'tubulin' \\(earlier\\) vs 'actin' \\(now\\)"):
        Session.start(loaded, SpyDriver(loaded), store=store, warm_from=[tubulin.id])
    with pytest.raises(ConfigError, match="either 'auto' or session ids"):
        Session.start(loaded, SpyDriver(loaded), store=store, warm_from=["auto", tubulin.id])
    assert len(store.list()) == count


def test_resume_rebuilds_the_same_warm_started_optimizer_without_the_earlier_ledgers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SessionStore(tmp_path / "sessions")
    earlier = session_run(config(budget=6), store)
    loaded = config(budget=8, optimizer={"random_seed": 5})
    straight = session_run(loaded, store, [earlier.id])
    cut = session_run(loaded, store, [earlier.id], interrupt_on=4)
    assert len(history(store, cut.id).done_frames()) == 4
    # the same seed and prior: the same proposals up to the cut
    assert proposals(store, cut.id)[:5] == proposals(store, straight.id)[:5]
    assert proposals(store, cut.id)[0][1] == "prior"
    shutil.rmtree(earlier.folder)  # the resume reads its own ledger only
    said: list[str] = []
    original = Session._log
    monkeypatch.setattr(
        Session, "_log", lambda self, level, message, trace=None: said.append(message)
    )
    resumed = Session.resume(
        cut.id, loaded, SpyDriver(loaded), store=store, objectives=objectives()
    )
    monkeypatch.setattr(Session, "_log", original)
    # the replay asked the rebuilt optimizer for every recorded frame: each proposal matched
    assert not [m for m in said if "differs from the ledger" in m], said
    assert resumed.warm_start == history(store, straight.id).warm_start
    resumed.run()
    resumed.close()
    after = history(store, cut.id)
    assert len(after.done_frames()) == 8 and after.warm_start is not None
    assert [e.kind for e in after.events].count("warm_start") == 1


def test_prior_settings_beyond_today_caps_are_never_proposed_or_applied(
    tmp_path: Path,
) -> None:
    store = SessionStore(tmp_path / "sessions")
    loaded = config(budget=8)
    earlier = session_run(loaded, store)
    told = history(store, earlier.id).told_frames()
    # What the warm start would take first under the earlier caps: today's site caps the
    # light dose just below it.
    then = prior_design(
        SearchSpace(loaded.config.params, loaded.config.safety),
        loaded.config.optimizer,
        observations(earlier.id, history(store, earlier.id)),
    )
    cap_uj = 0.9 * then[0].params.light_dose_per_pixel_uj()
    today = config(budget=4, safety={"max_light_dose_per_pixel_uj": cap_uj})
    warm = session_run(today, store, [earlier.id])
    recorded = history(store, warm.id)
    event = recorded.warm_start
    assert event is not None and event.observations == len(told)
    caps = today.config.safety
    for point in event.prior_points:
        assert caps.allows(ImagingParams.from_mapping(point["params"]))
    for frame in recorded.frames.values():
        assert caps.allows(ImagingParams.from_mapping(frame.params))
        assert caps.allows(ImagingParams.from_mapping(frame.acquired.params_applied))
    assert len(recorded.done_frames()) == 4


# -- the command line and the daemon -------------------------------------------------------
SITE = """
[objectives]
names = ["resolution"]

[optimizer]
n_candidates = 200
n_initial_points = 3

[session]
retry_delay_s = 0.0

[drivers.simulator]
field_px = 64
sample_fields = 4
"""


def cli(home: Path, site: Path, *args: str) -> Any:
    return run_stedloop(
        *args, env={"STEDLOOP_HOME": str(home), "STEDLOOP_CONFIG": str(site)}, timeout_s=180
    )


def test_cli_warm_start_show_and_bad_input(tmp_path: Path, isolated_home: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(SITE)
    done = cli(isolated_home, site, "optimize", "--budget", "3", "--seed", "2", "--json")
    assert done.returncode == 0, done.stderr
    (earlier,) = SessionStore(isolated_home / "sessions").list()

    done = cli(isolated_home, site, "optimize", "--budget", "2", "--warm-start", "auto")
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stdout.splitlines() if "warm start (auto" in line]
    assert len(said) == 1 and earlier.id in said[0], done.stdout
    warm = SessionStore(isolated_home / "sessions").newest_first()[0]
    shown = cli(isolated_home, site, "session", "show", warm.id)
    assert shown.returncode == 0, shown.stderr
    assert f"from session {earlier.id} frame" in shown.stdout

    for args, message in (
        (["--warm-start", "nope"], "no session 'nope'"),
        (["--warm-start", earlier.id, "--objective", "bleaching"], "is not comparable"),
        (["--warm-start", "auto", "--resume", earlier.id], "cannot be combined with --resume"),
    ):
        done = cli(isolated_home, site, "optimize", "--budget", "2", *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
        assert "Traceback" not in done.stderr
    assert len(SessionStore(isolated_home / "sessions").list()) == 2


def test_the_daemon_starts_a_warm_session_and_refuses_an_unknown_one(
    tmp_path: Path, isolated_home: Path
) -> None:
    from test_resume_safety import wait_until_ended

    from stedloop.client import Client, DaemonError
    from stedloop.client.local_daemon import start_daemon, stop_daemon

    site = tmp_path / "site.toml"
    site.write_text(SITE)
    daemon, ready = start_daemon(isolated_home, {"STEDLOOP_CONFIG": str(site)})
    try:
        with Client(ready["request_address"]) as client:
            earlier = client.call("session.start", budget_frames=3)["session_id"]
            wait_until_ended(client)
            with pytest.raises(DaemonError) as refused:
                client.call("session.start", budget_frames=2, warm_start=["nope"])
            assert refused.value.code == "not_found"
            with pytest.raises(DaemonError) as refused:
                client.call("session.start", resume=earlier, warm_start=["auto"])
            assert refused.value.code == "invalid_params"
            warm = client.call("session.start", budget_frames=2, warm_start=[earlier[:10]])
            wait_until_ended(client)
            got = client.call("session.get", session_id=warm["session_id"])
            assert got["warm_start"]["sessions"] == [earlier]
            assert got["frames"][0]["source"] == "prior"
            assert got["frames"][0]["prior_from"].startswith(f"{earlier}#")
    finally:
        assert stop_daemon(daemon) == 0
    recorded = history(SessionStore(isolated_home / "sessions"), warm["session_id"])
    assert recorded.warm_start is not None and recorded.warm_start.sessions == [earlier]
    assert recorded.frames[0].source == "prior"
