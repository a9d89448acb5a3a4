"""A resumed session runs under the site's caps and settings in force now, never the ledger's.

Each case creates a real session with `stedloop optimize` (a subprocess on the simulator),
changes the site's configuration or edits the ledger the way an attacker could with sqlite3,
then resumes it and reads back, from the ledger, what was actually applied.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stedloop.store import SessionStore

STEDLOOP = [sys.executable, "-m", "stedloop.cli.main"]

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
sample_fields = 6

[params.depletion_mw]
min = 0.0
max = {depletion_max}

[safety]
max_depletion_mw = {depletion_cap}
"""


def write_site(folder: Path, name: str, depletion_max: float, depletion_cap: float) -> Path:
    path = folder / name
    path.write_text(SITE.format(depletion_max=depletion_max, depletion_cap=depletion_cap))
    return path


def stedloop(*args: str, home: Path, site: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "STEDLOOP_HOME": str(home), "STEDLOOP_CONFIG": str(site), **env}
    return subprocess.run(
        [*STEDLOOP, *args], env=environment, capture_output=True, text=True, timeout=180
    )


def new_session(home: Path, site: Path, budget: int = 2) -> str:
    done = stedloop(
        "optimize", "--budget", str(budget), "--seed", "3", "--json", home=home, site=site
    )
    assert done.returncode == 0, done.stderr
    (info,) = SessionStore(home / "sessions").list()
    return info.id


def resume(
    session_id: str, budget: int, *flags: str, home: Path, site: Path, **env: str
) -> subprocess.CompletedProcess:
    return stedloop(
        "optimize",
        "--resume",
        session_id,
        "--budget",
        str(budget),
        *flags,
        home=home,
        site=site,
        **env,
    )


def new_frames_mw(home: Path, session_id: str, first: int = 2) -> list[float]:
    """Depletion applied on the frames taken after the resume."""
    return [mw for frame, mw in applied_depletions_mw(home, session_id).items() if frame >= first]


def applied_depletions_mw(home: Path, session_id: str) -> dict[int, float]:
    history = SessionStore(home / "sessions").open(session_id, readonly=True).history()
    return {
        f.frame: f.acquired.params_applied["depletion_mw"]
        for f in history.frames.values()
        if f.acquired
    }


def edit_created_config(home: Path, session_id: str, change: dict[str, Any]) -> None:
    """What someone with sqlite3 and the ledger file can do: rewrite the creation snapshot."""
    path = home / "sessions" / session_id / "ledger.sqlite"
    db = sqlite3.connect(path)
    (payload,) = db.execute("SELECT payload FROM events WHERE kind = 'created'").fetchone()
    created = json.loads(payload)
    for section, values in change.items():
        created["config"].setdefault(section, {}).update(values)
    db.execute("DROP TRIGGER events_no_update")
    db.execute("UPDATE events SET payload = ? WHERE kind = 'created'", (json.dumps(created),))
    db.commit()
    db.close()


def test_resume_under_lowered_site_caps_is_refused_then_forced_inside_them(
    tmp_path: Path, isolated_home: Path
) -> None:
    old_site = write_site(tmp_path, "site-then.toml", depletion_max=185, depletion_cap=350)
    session_id = new_session(isolated_home, old_site)
    assert max(applied_depletions_mw(isolated_home, session_id).values()) > 0

    lowered = write_site(tmp_path, "site-now.toml", depletion_max=100, depletion_cap=100)
    refused = resume(session_id, 5, home=isolated_home, site=lowered)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    message = refused.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "depletion_mw.max=185" in message and "max_depletion_mw=100" in message
    assert "site-now.toml" in message  # where today's cap comes from

    forced = resume(session_id, 5, "--force", home=isolated_home, site=lowered)
    assert forced.returncode == 0, forced.stderr
    new_frames = new_frames_mw(isolated_home, session_id)
    assert len(new_frames) == 3 and max(new_frames) <= 100.0


def test_resume_obeys_a_cap_lowered_by_an_environment_variable(
    tmp_path: Path, isolated_home: Path
) -> None:
    site = write_site(tmp_path, "site.toml", depletion_max=185, depletion_cap=350)
    session_id = new_session(isolated_home, site)
    env_cap = {
        "STEDLOOP_SAFETY__MAX_DEPLETION_MW": "50",
        "STEDLOOP_PARAMS__DEPLETION_MW__MAX": "50",
    }
    refused = resume(session_id, 4, home=isolated_home, site=site, **env_cap)
    assert refused.returncode == 2 and "max_depletion_mw=50" in refused.stderr
    assert "environment" in refused.stderr
    forced = resume(session_id, 4, "--force", home=isolated_home, site=site, **env_cap)
    assert forced.returncode == 0, forced.stderr
    new_frames = new_frames_mw(isolated_home, session_id)
    assert len(new_frames) == 2 and max(new_frames) <= 50.0


def test_caps_and_ranges_written_into_a_ledger_are_never_applied(
    tmp_path: Path, isolated_home: Path
) -> None:
    site = write_site(tmp_path, "site.toml", depletion_max=185, depletion_cap=350)
    session_id = new_session(isolated_home, site)
    edit_created_config(
        isolated_home,
        session_id,
        {
            "safety": {"max_depletion_mw": 1000.0, "max_light_dose_per_pixel_uj": 1e6},
            "params": {"depletion_mw": {"min": 400.0, "max": 488.0}},
        },
    )
    refused = resume(session_id, 4, home=isolated_home, site=site)
    assert refused.returncode == 2
    assert "depletion_mw.max=488" in refused.stderr and "max_depletion_mw=350" in refused.stderr
    forced = resume(session_id, 4, "--force", home=isolated_home, site=site)
    assert forced.returncode == 0, forced.stderr
    new_frames = new_frames_mw(isolated_home, session_id)
    assert len(new_frames) == 2 and max(new_frames) <= 185.0  # the site's own range


def test_a_ledger_cannot_choose_the_driver_worker_or_interpreter(
    tmp_path: Path, isolated_home: Path
) -> None:
    site = write_site(tmp_path, "site.toml", depletion_max=185, depletion_cap=350)
    session_id = new_session(isolated_home, site)
    marker = tmp_path / "ran.txt"
    program = tmp_path / "not-python"
    program.write_text(f"#!/bin/sh\necho ran > {marker}\nexit 1\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    edit_created_config(
        isolated_home,
        session_id,
        {
            "driver": {"in_worker": True, "name": "imspector"},
            "worker": {"python_executable": str(program)},
            "store": {"data_dir": str(tmp_path / "elsewhere")},
        },
    )
    resumed = stedloop(
        "optimize", "--resume", session_id, "--budget", "3", "--json", home=isolated_home, site=site
    )
    assert resumed.returncode == 0, resumed.stderr
    assert not marker.exists()
    assert not (tmp_path / "elsewhere").exists()
    history = SessionStore(isolated_home / "sessions").open(session_id, readonly=True).history()
    assert len(history.done_frames()) == 3


@pytest.mark.parametrize(
    "site_text, key",
    [
        ("[safety]\nmax_depletion_mw = inf\n", "safety.max_depletion_mw"),
        ("[safety]\nmax_excitation_uw = nan\n", "safety.max_excitation_uw"),
        ("[optimizer]\nxi = 1e999\n", "optimizer.xi"),
        ("[objectives.bounds]\nresolution = [0.0, inf]\n", "objectives.bounds.resolution"),
    ],
)
def test_non_finite_settings_in_a_site_file_are_refused(
    tmp_path: Path, isolated_home: Path, site_text: str, key: str
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(site_text)
    checked = stedloop("config", "validate", home=isolated_home, site=site)
    assert checked.returncode == 2
    assert key in checked.stderr and "finite" in checked.stderr
    assert "Traceback" not in checked.stderr


def wait_until_ended(client: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.call("status")["session"]["state"] not in ("finished", "stopped", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_daemon_resumes_under_its_site_caps_in_force(
    tmp_path: Path, isolated_home: Path
) -> None:
    from stedloop.client import Client, DaemonError
    from stedloop.client.local_daemon import start_daemon, stop_daemon

    site_then = write_site(tmp_path, "site-then.toml", depletion_max=185, depletion_cap=350)
    daemon, ready = start_daemon(isolated_home, {"STEDLOOP_CONFIG": str(site_then)})
    try:
        with Client(ready["request_address"]) as client:
            session_id = client.call("session.start", budget_frames=2)["session_id"]
            wait_until_ended(client)
    finally:
        assert stop_daemon(daemon) == 0

    site_now = write_site(tmp_path, "site-now.toml", depletion_max=100, depletion_cap=100)
    daemon, ready = start_daemon(isolated_home, {"STEDLOOP_CONFIG": str(site_now)})
    try:
        with Client(ready["request_address"]) as client:
            with pytest.raises(DaemonError) as refused:
                client.call("session.start", resume=session_id, budget_frames=4)
            assert refused.value.code == "invalid_params"
            assert "depletion_mw.max=185" in str(refused.value)
            assert "max_depletion_mw=100" in str(refused.value)
            client.call("session.start", resume=session_id, budget_frames=4, force=True)
            wait_until_ended(client)
            assert client.call("status")["session"]["state"] == "finished"
    finally:
        assert stop_daemon(daemon) == 0
    new_frames = new_frames_mw(isolated_home, session_id)
    assert len(new_frames) == 2 and max(new_frames) <= 100.0
