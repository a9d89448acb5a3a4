"""`stedloop optimize` and `stedloop session` as real subprocesses: kill -9, resume, Ctrl-C."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stedloop.store import SessionStore

STEDLOOP = [sys.executable, "-m", "stedloop.cli.main"]

CONFIG = """
[objectives]
names = ["resolution", "bleaching"]

[optimizer]
n_candidates = 300

[session]
retry_delay_s = 0.0

[drivers.simulator]
field_px = 64
sample_fields = 4
acquire_delay_s = {delay}
"""


def write_config(
    folder: Path, name: str = "site.toml", delay: float = 0.0, extra: str = ""
) -> Path:
    path = folder / name
    path.write_text(CONFIG.format(delay=delay) + extra)
    return path


def stedloop(*args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "STEDLOOP_HOME": str(home)}
    return subprocess.run(
        [*STEDLOOP, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_optimize_then_ls_show_export(tmp_path: Path, isolated_home: Path) -> None:
    cfg = write_config(tmp_path)
    done = stedloop(
        "optimize", "-c", str(cfg), "--budget", "3", "--seed", "5", "--json", home=isolated_home
    )
    assert done.returncode == 0, done.stderr
    events = json_lines(done.stdout)
    assert [e["frame"] for e in events if e["kind"] == "frame"] == [0, 1, 2]
    summary = events[-1]
    assert summary["kind"] == "summary" and summary["frames"] == 3
    session_id = summary["id"]

    listed = json.loads(stedloop("session", "ls", "--json", home=isolated_home).stdout)
    assert [s["id"] for s in listed] == [session_id]
    shown = json.loads(stedloop("session", "show", session_id, "--json", home=isolated_home).stdout)
    assert shown["best"]["combined"] == pytest.approx(summary["best_score"])
    assert 1 <= len(shown["pareto_front"]) <= 3
    text = stedloop("session", "show", session_id, home=isolated_home).stdout
    assert "Pareto front" in text and "best: frame" in text

    out = tmp_path / "export"
    exported = stedloop("session", "export", session_id, "--out", str(out), home=isolated_home)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert [int(r["frame"]) for r in rows] == [0, 1, 2]
    assert {
        "dwell_time_us",
        "resolution_nm",
        "bleaching_fraction",
        "combined_score",
        "tiff",
    } <= set(rows[0])
    for name in ("score_vs_frame.png", "parameter_traces.png", "pareto_front.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_session_and_bad_budget_are_one_line_errors(isolated_home: Path) -> None:
    missing = stedloop("session", "show", "nope", home=isolated_home)
    assert missing.returncode == 2 and "no session 'nope'" in missing.stderr
    resumed = stedloop("optimize", "--resume", "nope", home=isolated_home)
    assert resumed.returncode == 2 and "no session" in resumed.stderr


def test_kill_9_mid_session_then_resume_loses_nothing(tmp_path: Path, isolated_home: Path) -> None:
    cfg = write_config(tmp_path, delay=0.3)
    env = {**os.environ, "STEDLOOP_HOME": str(isolated_home)}
    process = subprocess.Popen(
        [*STEDLOOP, "optimize", "-c", str(cfg), "--budget", "8", "--seed", "1", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    frames = 0
    deadline = time.monotonic() + 120
    while frames < 3 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        frames += event["kind"] == "frame"
    time.sleep(0.15)  # land inside the next frame's 0.3 s acquisition
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert frames == 3, process.stderr.read()

    store = SessionStore(isolated_home / "sessions")
    (info,) = store.list()
    assert info.interrupted  # no stopped/finished event: it was killed
    before = store.open(info.id).history()
    recorded = {f.frame: (f.params, f.values, f.combined) for f in before.done_frames()}
    assert len(recorded) >= 3
    in_flight = before.in_flight()

    other = write_config(
        tmp_path, "other.toml", extra="\n[params.depletion_mw]\nmin = 0.0\nmax = 100.0\n"
    )
    refused = stedloop("optimize", "-c", str(other), "--resume", info.id, home=isolated_home)
    assert refused.returncode == 2
    assert "params.depletion_mw.max" in refused.stderr and "--force" in refused.stderr

    fast = write_config(tmp_path, "fast.toml")
    resumed = stedloop(
        "optimize",
        "-c",
        str(fast),
        "--resume",
        info.id,
        "--budget",
        "8",
        "--json",
        home=isolated_home,
    )
    assert resumed.returncode == 0, resumed.stderr
    after = store.open(info.id).history()
    assert after.state == "finished"
    assert [f.frame for f in after.done_frames()] == list(range(8))
    for frame, (params, values, combined) in recorded.items():
        record = after.frames[frame]
        assert (record.params, record.values, record.combined) == (params, values, combined)
    redone = [e["frame"] for e in json_lines(resumed.stdout) if e["kind"] == "frame"]
    # Only the frame in flight at the kill (if any) is taken again; the others are new.
    expected_first = in_flight.frame if in_flight else len(recorded)
    assert redone[0] == expected_first and redone == list(range(expected_first, 8))
    if in_flight:
        assert after.frames[in_flight.frame].params == in_flight.params


def test_ctrl_c_stops_cleanly_after_the_frame(tmp_path: Path, isolated_home: Path) -> None:
    cfg = write_config(tmp_path, delay=0.3)
    env = {**os.environ, "STEDLOOP_HOME": str(isolated_home)}
    process = subprocess.Popen(
        [*STEDLOOP, "optimize", "-c", str(cfg), "--budget", "50", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while True:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        if json.loads(line)["kind"] == "frame":
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    summary = json_lines(out)[-1]
    assert summary["kind"] == "summary" and summary["state"] == "stopped"
    assert summary["stop_reason"] == "stopped on request"
    (info,) = SessionStore(isolated_home / "sessions").list()
    history = SessionStore(isolated_home / "sessions").open(info.id).history()
    assert history.state == "stopped" and history.in_flight() is None  # the frame was finished


def test_optimize_numbers_frames_from_0_like_the_files_and_the_ledger(
    tmp_path: Path, isolated_home: Path
) -> None:
    cfg = write_config(tmp_path)
    done = stedloop("optimize", "-c", str(cfg), "--budget", "2", "--seed", "5", home=isolated_home)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("frame ")]
    progress = [re.match(r"frame +(\d+) \((\d+)/(\d+) done\)", line) for line in lines]
    assert [m.groups() if m else line for m, line in zip(progress, lines, strict=True)] == [
        ("0", "1", "2"),
        ("1", "2", "2"),
    ]
    (folder,) = (isolated_home / "sessions").iterdir()
    assert sorted(p.name for p in (folder / "frames").iterdir()) == [
        "0000.ome.tif",
        "0001.ome.tif",
    ]


def test_session_ls_lists_newest_first(tmp_path: Path, isolated_home: Path) -> None:
    """README: `stedloop session ls` lists every session, newest first (text and --json)."""
    from test_damaged_sessions import new_session

    store = SessionStore(isolated_home / "sessions")
    made = [new_session(store, budget=1) for _ in range(3)]  # oldest first
    listed = json.loads(stedloop("session", "ls", "--json", home=isolated_home).stdout)
    assert [s["id"] for s in listed] == made[::-1]
    text = stedloop("session", "ls", home=isolated_home).stdout
    assert [line.split()[0] for line in text.splitlines()] == made[::-1]


def test_optimize_warns_up_front_when_the_budget_exceeds_the_sample(
    tmp_path: Path, isolated_home: Path
) -> None:
    """--budget 5 on a 2 x 2-field sample: one warning line before the first frame, not a
    silent "sample is used up" at the end."""
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("sample_fields = 4", "sample_fields = 2"))
    done = stedloop("optimize", "-c", str(cfg), "--budget", "5", "--seed", "1", home=isolated_home)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    warning = (
        "warning: the budget asks for 5 frames but the sample has only 4 fresh regions "
        "(2 x 2 fields of 64 x 64 px)"
    )
    at = next(i for i, line in enumerate(lines) if line.startswith(warning))
    first_frame = next(i for i, line in enumerate(lines) if line.startswith("frame"))
    assert at < first_frame
    assert "sample is used up" in done.stdout
    within = stedloop("optimize", "-c", str(cfg), "--budget", "4", home=isolated_home)
    assert within.returncode == 0 and "warning" not in within.stdout + within.stderr
