"""A resumed session seen through the daemon: `start --resume --watch`, `watch` and `status`
show the run in progress and the session's own count, not an earlier run's end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from cli_helpers import run_stedloop
from test_daemon_e2e import spawn

from stedloop.client import Client
from stedloop.client.local_daemon import stop_daemon


def frame_numbers(text: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"^frame (\d+) ", text, re.MULTILINE)]


def wait_until_ended(client: Client, session_id: str) -> None:
    deadline = time.monotonic() + 60
    while client.call("session.get", session_id=session_id, first_frame=10**6)["state"] in (
        "running",
        "open",
    ):
        assert time.monotonic() < deadline, "the session did not end"
        time.sleep(0.1)


def test_resumed_runs_are_watched_to_their_own_end_and_counted_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    process, ready = spawn(home, delay_s=0.05)
    env = {"STEDLOOP_HOME": str(home), "STEDLOOP_CONFIG": str(home / "site.toml")}
    connect = ("--connect", ready["request_address"])
    try:
        with Client(ready["request_address"]) as client:
            session_id = client.call("session.start", budget_frames=2)["session_id"]
            wait_until_ended(client, session_id)

            # Resume to 4 frames and watch: this run's frames only, to this run's end.
            resumed = run_stedloop(
                "start", "--resume", session_id, "--budget", "4", "--watch", *connect, env=env
            )
            assert resumed.returncode == 0, resumed.stderr
            assert frame_numbers(resumed.stdout) == [2, 3], resumed.stdout
            lines = resumed.stdout.strip().splitlines()
            assert lines[-1].startswith("session finished") and "frames 4" in lines[-1], lines
            # The run opens with the session's progress so far (earlier runs included).
            assert re.search(r"^session resumed  frames 2  best \d", resumed.stdout, re.M)

            status = run_stedloop("status", *connect, env=env)
            assert status.returncode == 0, status.stderr
            line = next(x for x in status.stdout.splitlines() if x.startswith("session "))
            assert f"{session_id}  finished  4/4 frames done  best " in line, line
            assert not line.endswith("best –"), line

            # Resume again and pause at once: status still knows the session's count and best.
            started = client.call("session.start", resume=session_id, budget_frames=6)
            client.call("session.pause", session_id=session_id, token=started["token"])
            snapshot = client.call("status")["session"]
            assert snapshot["frames_done"] >= 4 and snapshot["best_score"] is not None
            assert snapshot["since_seq"] == started["since_seq"]
            status = run_stedloop("status", *connect, env=env)
            line = next(x for x in status.stdout.splitlines() if x.startswith("session "))
            assert re.search(r"  [456]/6 frames done  best \d", line), line

            # `watch ID` of the running (paused) resumed session: from this run's start.
            watcher = subprocess.Popen(
                [sys.executable, "-m", "stedloop.cli.main", "watch", session_id, *connect],
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.0)
            client.call("session.resume", session_id=session_id, token=started["token"])
            out, err = watcher.communicate(timeout=60)
            assert watcher.returncode == 0, err
            assert out.startswith("session resumed  frames 4"), out
            assert frame_numbers(out) and min(frame_numbers(out)) >= 4, out
            assert out.strip().splitlines()[-1].startswith("session finished"), out
            assert "frames 6" in out.strip().splitlines()[-1], out

            # `watch` of the ended session: every buffered run, ending with the last one's end.
            ended = run_stedloop("watch", session_id, *connect, env=env)
            assert ended.returncode == 0, ended.stderr
            assert frame_numbers(ended.stdout) == [0, 1, 2, 3, 4, 5], ended.stdout
            assert "frames 6" in ended.stdout.strip().splitlines()[-1], ended.stdout
    finally:
        assert stop_daemon(process) == 0
