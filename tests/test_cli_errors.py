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
from study_helpers import DEFAULT_ROWS, make_study_set

from stedloop.cli import main as cli_main
from stedloop.config import load_config
from stedloop.csvtable import read_csv_table
from stedloop.drivers import create_driver
from stedloop.errors import DataError
from stedloop.objectives.signal import SignalRatioObjective
from stedloop.quality.checkpoint import CheckpointError, load_checkpoint
from stedloop.quality.dataset import load_dataset
from stedloop.session import Session
from stedloop.store import SessionStore
from stedloop.study.studyset import load_study_set, read_label_scores

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


def test_train_checks_its_model_file_before_training(tmp_path: Path) -> None:
    # It trained first and failed when saving: "/tmp.tmp -> /tmp: Is a directory".
    line = one_error_line(run_stedloop("train", str(tmp_path), "--out", str(tmp_path)))
    assert line == f"error: --out {tmp_path} is a folder; name the file to write"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_error_line(run_stedloop("train", str(tmp_path), "--out", str(blocker / "m.pt")))
    assert "the folder of --out" in line and "is not a folder" in line


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


# -- CSV files -----------------------------------------------------------------------------


def test_a_nul_byte_in_a_study_csv_names_file_and_line(tmp_path: Path) -> None:
    root = make_study_set(tmp_path / "set", DEFAULT_ROWS[:2])
    lines = (root / "study.csv").read_text().splitlines()
    lines[2] = lines[2].replace(".tif", "\x00.tif")  # in the image path: Path.resolve raised
    (root / "study.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"study\.csv:3: a NUL byte"):
        load_study_set(root)
    line = one_error_line(run_stedloop("study", "serve", "--set", str(root), "--port", "0"))
    assert "study.csv:3: a NUL byte" in line


def test_label_scores_and_manifests_refuse_nul_and_non_utf8(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"score\n0.5\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"labels\.csv:3: not UTF-8 text"):
        read_label_scores(labels)
    root = make_study_set(tmp_path / "set", DEFAULT_ROWS[:1])
    line = one_error_line(
        run_stedloop("study", "add-baseline", "--set", str(root), "--labels", str(labels))
    )
    assert "labels.csv:3: not UTF-8 text" in line

    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.csv").write_bytes(b"path,score\na\x00.tif,0.5\n")
    with pytest.raises(DataError, match=r"manifest\.csv:2: a NUL byte"):
        load_dataset(data)


def test_a_malformed_csv_row_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("score\n" + '"' + "x" * 200_000 + '"\n')  # beyond csv's field limit
    with pytest.raises(DataError, match=r"big\.csv:\d+: malformed CSV"):
        read_csv_table(path)


# -- model files that are not checkpoints --------------------------------------------------


@pytest.mark.parametrize(
    "content", [b"a", b".", b"hello\n", b"\x80\x02]q\x00.", b"", b"PK\x03\x04broken"]
)
def test_a_non_checkpoint_is_refused_in_one_clear_sentence(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "pop from empty list" not in message and "weights_only" not in message
    assert "\n" not in message


def test_score_with_a_non_checkpoint_model_is_one_line(tmp_path: Path) -> None:
    model = tmp_path / "notes.pt"
    model.write_bytes(b"a")  # torch's unpickler answered "pop from empty list"
    image = tmp_path / "image.tif"
    image.write_bytes(b"")
    line = one_error_line(run_stedloop("score", "--model", str(model), str(image)))
    assert "not a quality checkpoint" in line and "pop from empty list" not in line


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
