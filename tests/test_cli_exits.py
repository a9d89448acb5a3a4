"""How `stedloop optimize` ends: exit codes, no thread left behind, and parameter ranges the
driver cannot set refused by `config validate` / `doctor` before any session starts."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from cli_helpers import run_stedloop

from stedloop.cli.doctor_cmd import _Failed, check_driver
from stedloop.config import load_config
from stedloop.drivers import create_driver
from stedloop.drivers.simulator.driver import HARDWARE_RANGES
from stedloop.objectives.signal import SignalRatioObjective
from stedloop.session import Session
from stedloop.store import SessionStore

SMALL = """
[objectives]
names = ["signal_ratio"]

[optimizer]
n_candidates = 300
hyperparameter_restarts = 10  # a slow background fit: still running when the budget ends

[session]
retry_delay_s = 0.0

[drivers.simulator]
field_px = 48
sample_fields = 4
"""

# Dwell times the simulator cannot set (its range is 0.1..1000 µs); within every cap.
DWELL_BEYOND_THE_SIMULATOR = """
[params.dwell_time_us]
min = 1500.0
max = 3000.0
"""


def write(path: Path, *parts: str) -> Path:
    path.write_text("".join(parts))
    return path


def test_optimize_exits_0_every_time_a_session_finishes(tmp_path: Path) -> None:
    # It exited 134 ("terminate called without an active exception") in about half of such
    # runs: the optimizer's background fit, a daemon thread, was still inside scipy's C++
    # code when the interpreter exited. Four runs in a row must all exit 0.
    config = write(tmp_path / "site.toml", SMALL)
    for seed in range(4):
        done = run_stedloop("optimize", "-c", str(config), "--budget", "4", "--seed", str(seed))
        assert done.returncode == 0, (seed, done.returncode, done.stderr[-500:])
        assert "terminate called" not in done.stderr
        assert "finished: frame budget of 4 spent" in done.stdout
        assert "resume with" not in done.stdout  # nothing to resume: the budget was spent
        assert "--budget N (N > 4)" in done.stdout


def test_a_session_leaves_no_optimizer_thread_running(tmp_path: Path) -> None:
    loaded = load_config(
        overrides={
            "session": {"budget_frames": 4},
            "optimizer": {"random_seed": 3, "n_candidates": 300, "hyperparameter_restarts": 10},
            "drivers": {"simulator": {"field_px": 48, "sample_fields": 4}},
        }
    )
    driver = create_driver(loaded.config)
    driver.connect()
    store = SessionStore(tmp_path / "sessions")
    session = Session.start(loaded, driver, store=store, objectives=[SignalRatioObjective()])
    summary = session.run()
    session.close()
    assert summary.state == "finished" and summary.frames == 4
    # The last frame started a hyper-parameter fit in the background; run() waits for it.
    assert [t.name for t in threading.enumerate() if t.name == "stedloop-gp"] == []


def test_a_session_whose_frames_are_all_refused_exits_1_without_a_resume_hint(
    tmp_path: Path,
) -> None:
    config = write(tmp_path / "site.toml", SMALL, DWELL_BEYOND_THE_SIMULATOR)
    done = run_stedloop("optimize", "-c", str(config), "--budget", "3", "--seed", "1")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "failed: driver refused it on frame 0" in errors[0]
    assert "outside the simulator's range" in errors[0]
    assert "resume with" not in done.stdout


def test_a_session_whose_frames_are_all_refused_fails_in_json_mode_too(tmp_path: Path) -> None:
    config = write(tmp_path / "site.toml", SMALL, DWELL_BEYOND_THE_SIMULATOR)
    done = run_stedloop("optimize", "-c", str(config), "--budget", "3", "--json")
    assert done.returncode == 1
    assert '"kind": "summary"' in done.stdout and '"state": "failed"' in done.stdout


def test_a_session_that_skips_every_refused_frame_exits_1(tmp_path: Path) -> None:
    # on_driver_failure = "continue": the session "finishes" its budget, but with no frame.
    policy = '[session]\non_driver_failure = "continue"\ndriver_retries = 0\n'
    config = write(
        tmp_path / "site.toml", SMALL.replace("[session]\n", policy), DWELL_BEYOND_THE_SIMULATOR
    )
    done = run_stedloop("optimize", "-c", str(config), "--budget", "2", "--seed", "1")
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "none of its 2 frames could be scored" in errors[0]
    assert "resume with" not in done.stdout and "more frames" not in done.stdout


def test_params_space_names_each_range_beyond_a_drivers() -> None:
    config = load_config(overrides={"params": {"dwell_time_us": {"min": 1500.0, "max": 3000.0}}})
    problems = config.config.params.outside_ranges(HARDWARE_RANGES)
    assert problems == [
        "params.dwell_time_us 1500..3000 µs lies outside the driver's range 0.1..1000 µs"
    ]
    assert load_config().config.params.outside_ranges(HARDWARE_RANGES) == []


def test_config_validate_refuses_a_dwell_range_beyond_the_driver(tmp_path: Path) -> None:
    config = write(tmp_path / "site.toml", SMALL, DWELL_BEYOND_THE_SIMULATOR)
    done = run_stedloop("config", "validate", "-c", str(config))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "params.dwell_time_us 1500..3000 µs" in lines[0]
    assert "driver's range 0.1..1000 µs" in lines[0] and "'simulator'" in lines[0]

    fits = write(tmp_path / "fits.toml", SMALL)
    ok = run_stedloop("config", "validate", "-c", str(fits))
    assert ok.returncode == 0 and "configuration is valid" in ok.stdout


def test_doctor_fails_the_driver_check_for_a_range_beyond_the_driver() -> None:
    config = load_config(
        overrides={
            "params": {"dwell_time_us": {"min": 1500.0, "max": 3000.0}},
            "drivers": {"simulator": {"field_px": 48, "sample_fields": 2}},
        }
    ).config
    with pytest.raises(_Failed) as failed:
        check_driver(config, timeout_s=30)
    assert "params.dwell_time_us 1500..3000 µs" in str(failed.value)
    assert "0.1..1000 µs" in str(failed.value)
