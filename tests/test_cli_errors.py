"""Bad paths and bad files end as one `error:` line and a non-zero exit, never a traceback:
output folders, the data folder ($STEDLOOP_HOME), CSV files with a NUL byte, model files that
are not checkpoints, and whatever else reaches the top of the command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_stedloop

from stedloop.cli import main as cli_main
from stedloop.config import load_config
from stedloop.drivers import create_driver
from stedloop.objectives.signal import SignalRatioObjective
from stedloop.session import Session
from stedloop.store import SessionStore

LONG_NAME = "n" * 300  # beyond NAME_MAX (255): ENAMETOOLONG


def one_error_line(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single stderr line of a command that must fail cleanly with ``code``."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, (done.returncode, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def finished_session(home: Path) -> str:
    """A real one-frame session on the simulator in ``home``; its id."""
    loaded = load_config(
        overrides={
            "session": {"budget_frames": 1},
            "optimizer": {"random_seed": 1, "n_candidates": 100},
            "drivers": {"simulator": {"field_px": 32, "sample_fields": 2}},
        }
    )
    driver = create_driver(loaded.config)
    driver.connect()
    store = SessionStore(home / "sessions")
    session = Session.start(loaded, driver, store=store, objectives=[SignalRatioObjective()])
    session.run()
    session.close()
    return session.id


# -- session export --out -----------------------------------------------------------------


def test_export_onto_a_file_dev_null_or_a_long_name_is_one_line(
    tmp_path: Path, isolated_home: Path
) -> None:
    session_id = finished_session(isolated_home)
    a_file = tmp_path / "taken.csv"
    a_file.write_text("keep me")
    cases = {
        str(a_file): "exists and is not a folder",
        os.devnull: "exists and is not a folder",
        str(tmp_path / LONG_NAME): "File name too long",
        str(a_file / "below"): "Not a directory",
    }
    for out, reason in cases.items():
        line = one_error_line(run_stedloop("session", "export", session_id, "--out", out))
        assert "--out" in line and reason in line, line
        assert len(line) < 300  # the long name is shortened, not printed whole
    assert a_file.read_text() == "keep me"

    fine = run_stedloop("session", "export", session_id, "--out", str(tmp_path / "x"))
    assert fine.returncode == 0 and (tmp_path / "x" / "frames.csv").is_file()


@pytest.mark.parametrize(
    "command",
    [
        ["simulate", "--n", "1", "--out"],
        ["dataset", "synth", "--n", "2", "--out"],
    ],
)
def test_other_output_folders_say_the_same(tmp_path: Path, command: list[str]) -> None:
    line = one_error_line(run_stedloop(*command, str(tmp_path / LONG_NAME)))
    assert "cannot create --out" in line and "File name too long" in line
    line = one_error_line(run_stedloop(*command, os.devnull))
    assert "exists and is not a folder" in line


# -- the data folder -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["optimize", "--budget", "1", "--objective", "signal_ratio"],
        ["session", "ls"],
        ["session", "show", "abc"],
        ["serve", "--request-address", "tcp://127.0.0.1:0", "--event-address", "tcp://127.0.0.1:0"],
        ["start", "--timeout", "1"],
    ],
)
def test_a_file_as_stedloop_home_is_one_line_naming_it(tmp_path: Path, command: list[str]) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    line = one_error_line(run_stedloop(*command, env={"STEDLOOP_HOME": str(home)}))
    assert f"data folder {home} ($STEDLOOP_HOME) is a file, not a folder" in line


@pytest.mark.parametrize(
    "command",
    [
        ["optimize", "--budget", "1", "--objective", "signal_ratio"],
        ["serve", "--request-address", "tcp://127.0.0.1:0", "--event-address", "tcp://127.0.0.1:0"],
    ],
)
def test_a_stedloop_home_that_cannot_be_created_is_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    home = blocker / "home"  # below a file: mkdir fails with ENOTDIR for any user
    line = one_error_line(run_stedloop(*command, env={"STEDLOOP_HOME": str(home)}))
    assert f"cannot create the data folder {home} ($STEDLOOP_HOME)" in line


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere"
)
def test_an_unwritable_stedloop_home_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o500)
    try:
        done = run_stedloop(
            "optimize", "--budget", "1", "--objective", "signal_ratio",
            env={"STEDLOOP_HOME": str(home)},
        )  # fmt: skip
    finally:
        home.chmod(0o700)
    assert f"data folder {home} ($STEDLOOP_HOME) is not writable" in one_error_line(done)


def test_serve_refuses_a_ready_file_in_a_missing_folder_before_starting(tmp_path: Path) -> None:
    ready = tmp_path / "no-such-folder" / "ready.json"
    done = run_stedloop(
        "serve", "--ready-file", str(ready),
        "--request-address", "tcp://127.0.0.1:0", "--event-address", "tcp://127.0.0.1:0",
    )  # fmt: skip
    assert "--ready-file" in one_error_line(done)


# -- the top of the command ------------------------------------------------------------------


def test_an_os_error_reaching_the_top_is_one_line(tmp_path: Path) -> None:
    taken = tmp_path / "keys"
    taken.write_text("")
    line = one_error_line(run_stedloop("keys", "--dir", str(taken)))
    assert line == f"error: {taken}: File exists"


def test_an_unexpected_error_is_one_line_with_a_debug_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("something nobody planned for")

    # A bug stand-in: `config show` hits an exception no code path expects.
    monkeypatch.setattr("stedloop.cli.config_cmd.load_cli_config", broken)
    monkeypatch.setattr(sys, "argv", ["stedloop", "config", "show"])
    with pytest.raises(SystemExit) as ended:
        cli_main.run()
    assert ended.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: unexpected RuntimeError: something nobody planned for (a bug; rerun with "
        "STEDLOOP_DEBUG=1 for the traceback and report it)"
    ]
    monkeypatch.setenv("STEDLOOP_DEBUG", "1")
    with pytest.raises(RuntimeError, match="nobody planned"):
        cli_main.run()
