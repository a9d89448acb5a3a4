"""Progress of long commands: a rich bar with an estimate on a terminal, plain lines in a log
or a pipe, nothing with --json. The terminal cases run the real `stedloop` on a pseudo-terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

from study_helpers import DEFAULT_ROWS, make_study_set

from stedloop.cli.progress import CommandProgress
from stedloop.study.store import StudyStore
from stedloop.study.studyset import load_study_set

STEDLOOP = [sys.executable, "-m", "stedloop.cli.main"]
ANSI = re.compile(r"\x1b\[")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_say_how_far_and_how_long_is_left() -> None:
    log = io.StringIO()
    with CommandProgress("dataset synth", 20, "frames", stream=log, plain_interval_s=0) as bar:
        for done in range(1, 21):
            bar.update(done)
    lines = log.getvalue().splitlines()
    assert len(lines) == 10  # one per tenth
    assert lines[0].startswith("dataset synth: 2/20 frames (10%), ") and "left" in lines[0]
    assert lines[-1].startswith("dataset synth: 20/20 frames (100%), ")
    assert "left" not in lines[-1] and not ANSI.search(log.getvalue())


def test_plain_lines_are_rationed_so_quick_commands_stay_silent() -> None:
    log = io.StringIO()
    with CommandProgress("evaluate", 100, "images", stream=log) as bar:
        for done in range(101):
            bar.update(done)
    assert log.getvalue() == ""


def test_on_a_terminal_a_bar_with_the_time_left_and_quiet_is_silent() -> None:
    screen = Terminal()
    with CommandProgress("scoring", 3, "images", stream=screen) as bar:
        for done in range(1, 4):
            bar.update(done)
        bar.phase("bootstrap (network)", 50, "resamples")
        bar.update(50)
    drawn = screen.getvalue()
    assert "scoring" in drawn and "3/3" in drawn and "eta" in drawn
    assert "bootstrap (network)" in drawn and "50/50" in drawn
    quiet = Terminal()
    with CommandProgress("scoring", 3, "images", stream=quiet, quiet=True) as bar:
        bar.update(3)
        bar.phase("next", 2, "x")
    assert quiet.getvalue() == ""


def run_on_terminal(
    args: list[str], *, stdout_on_terminal: bool, env: dict[str, str]
) -> tuple[int, str, str]:
    """Run with stderr (and stdout if asked) on a pseudo-terminal: (exit code, what the
    terminal showed, stdout when it was a pipe)."""
    master, slave = pty.openpty()
    shown: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    process = subprocess.Popen(
        [*STEDLOOP, *args],
        stdout=slave if stdout_on_terminal else subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm", **env},
    )
    os.close(slave)
    out, _ = process.communicate(timeout=180)
    reader.join(timeout=10)
    os.close(master)
    text = b"".join(shown).decode(errors="replace")
    return process.returncode, text, (out or b"").decode()


def test_optimize_on_a_terminal_shows_a_bar_and_json_stays_json(
    tmp_path: Path, isolated_home: Path
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[objectives]\nnames = ["resolution"]\n[optimizer]\nn_candidates = 300\n'
        "[drivers.simulator]\nfield_px = 64\nsample_fields = 4\nacquire_delay_s = 0.2\n"
    )
    env = {"STEDLOOP_HOME": str(isolated_home)}
    args = ["optimize", "-c", str(site), "--budget", "3", "--seed", "1"]
    code, shown, _ = run_on_terminal(args, stdout_on_terminal=True, env=env)
    assert code == 0, shown
    assert "eta" in shown and re.search(r"\d/3", shown), shown
    code, shown, _ = run_on_terminal([*args, "--json"], stdout_on_terminal=True, env=env)
    assert code == 0, shown
    lines = [line.strip() for line in shown.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and all(json.loads(line) for line in lines), shown  # no bar, no escapes
    assert not ANSI.search(shown)


def _answered_study(tmp_path: Path) -> Path:
    study = load_study_set(make_study_set(tmp_path / "set", DEFAULT_ROWS))
    db = tmp_path / "answers.sqlite"
    store = StudyStore(db)
    store.bind(study)
    tester = store.start_or_resume("carol", study)
    while (trial := store.current_trial(tester)) is not None:
        store.answer(tester, trial.token, "first")
    store.close()
    return db


def test_study_report_shows_a_bar_on_a_terminal_and_none_with_json(tmp_path: Path) -> None:
    db = _answered_study(tmp_path)
    args = ["study", "report", "--db", str(db), "--out", str(tmp_path / "report")]
    code, shown, out = run_on_terminal(args, stdout_on_terminal=False, env={})
    assert code == 0, shown
    assert "study report" in shown and "figures" in shown and "eta" in shown
    assert "report.html" in out and not ANSI.search(out)  # stdout stays plain
    code, shown, out = run_on_terminal([*args, "--json"], stdout_on_terminal=False, env={})
    assert code == 0, shown
    assert shown == "" and json.loads(out)["groups"]


def test_dataset_synth_in_a_pipe_keeps_plain_output(tmp_path: Path) -> None:
    """Not a terminal (a log, a test): no escape codes; one line saying what was written, or
    the JSON summary with --json."""
    done = subprocess.run(
        [*STEDLOOP, "dataset", "synth", "--out", str(tmp_path / "d"), "--n", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote 3 labelled actin frames to {tmp_path / 'd'}")
    assert "next: stedloop train" in done.stdout
    assert not ANSI.search(done.stderr + done.stdout)
    code, shown, out = run_on_terminal(
        ["dataset", "synth", "--out", str(tmp_path / "e"), "--n", "3"],
        stdout_on_terminal=False,
        env={},
    )
    assert code == 0 and "dataset synth" in shown and "eta" in shown
    code, shown, out = run_on_terminal(
        ["dataset", "synth", "--out", str(tmp_path / "f"), "--n", "3", "--json"],
        stdout_on_terminal=False,
        env={},
    )
    assert code == 0 and shown == "", shown  # no bar with --json
    assert json.loads(out)["n"] == 3


def test_train_on_a_terminal_shows_epochs_and_an_estimate(tmp_path: Path) -> None:
    from test_quality_train import make_dataset

    data = make_dataset(tmp_path / "data", n=12)
    args = ["train", str(data), "--out", str(tmp_path / "m.pt"), "--epochs", "2"]
    args += ["--input-size", "32", "--batch-size", "8", "--device", "cpu", "--threads", "1"]
    code, shown, out = run_on_terminal(args, stdout_on_terminal=False, env={})
    assert code == 0, shown
    assert "2/2 epochs" in shown and "eta" in shown
    assert out.startswith("wrote ") and not ANSI.search(out)
