"""Session ids are matched exactly (or as a unique literal prefix, said so), never as glob
patterns: `*`, `????…`, `2*`, `[2]*`, `**` resolved to a real session or crashed before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stedloop.store import SessionNotFound, SessionStore
from stedloop.store import ledger as L
from stedloop.store.session_store import LEDGER_NAME

GLOBS = ["*", "?" * 20, "2*", "[2]*", "**", "*-*", "2026????-*"]


def make_store(tmp_path: Path, ids: list[str]) -> SessionStore:
    """A store whose sessions have exactly these folder names (each with a real ledger)."""
    store = SessionStore(tmp_path / "sessions")
    for session_id in ids:
        folder = store.root / session_id
        folder.mkdir(parents=True)
        ledger = L.Ledger(folder / LEDGER_NAME, create=True)
        ledger.append(L.CREATED, {"id": session_id, "name": None, "objectives": []})
        ledger.close()
    return store


@pytest.mark.parametrize("pattern", [*GLOBS, "../sessions", "", " ", "a b", "x\x00y", "é"])
def test_glob_patterns_and_foreign_characters_are_not_ids(tmp_path: Path, pattern: str) -> None:
    store = make_store(tmp_path, ["20261126-120102-3f2a"])
    with pytest.raises(SessionNotFound, match="is not a session id"):
        store.open(pattern, readonly=True)


def test_exact_id_and_unique_literal_prefix(tmp_path: Path) -> None:
    store = make_store(
        tmp_path, ["20261126-120102-3f2a", "20261126-120102-9b00", "20270101-000000-0000"]
    )
    (store.root / "20281111-000000-dead").mkdir()  # no ledger: not a session
    record = store.open("20261126-120102-3f2a", readonly=True)
    assert record.id == "20261126-120102-3f2a"
    record.close()
    record = store.open("2027", readonly=True)  # unique prefix: the record has the full id
    assert record.id == "20270101-000000-0000"
    record.close()
    with pytest.raises(SessionNotFound, match="prefix of 2 sessions") as info:
        store.open("20261126", readonly=True)
    assert "20261126-120102-3f2a" in str(info.value) and "20261126-120102-9b00" in str(info.value)
    with pytest.raises(SessionNotFound, match="no session '2028'"):
        store.open("2028", readonly=True)


def test_a_hand_named_session_folder_is_found_by_its_exact_name_only(tmp_path: Path) -> None:
    store = make_store(tmp_path, ["my run [old]"])
    record = store.open("my run [old]", readonly=True)
    assert record.id == "my run [old]"
    record.close()
    for pattern in ("my run*", "my run [ol", "*"):
        with pytest.raises(SessionNotFound):
            store.open(pattern, readonly=True)


# -- the CLI: session show/export, optimize --resume -----------------------------------------

CONFIG = """
[objectives]
names = ["resolution"]
[session]
budget_frames = 1
[drivers.simulator]
field_px = 64
sample_fields = 4
"""


def stedloop(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STEDLOOP_HOME": str(home), "STEDLOOP_CONFIG": str(home / "site.toml")}
    return subprocess.run(
        [sys.executable, "-m", "stedloop.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_refuses_patterns_and_says_when_a_prefix_was_expanded(isolated_home: Path) -> None:
    (isolated_home / "site.toml").write_text(CONFIG)
    ran = stedloop("optimize", "--json", home=isolated_home)
    assert ran.returncode == 0, ran.stderr
    (session_id,) = [p.name for p in (isolated_home / "sessions").iterdir()]
    for pattern in ("*", "2*", "[2]*", "**", "?" * len(session_id)):
        for args in (
            ("session", "show", pattern),
            ("session", "export", pattern, "--no-plots"),
            ("optimize", "--resume", pattern),
        ):
            result = stedloop(*args, home=isolated_home)
            assert result.returncode == 2, (args, result.stdout, result.stderr)
            assert "is not a session id" in result.stderr, (args, result.stderr)
            assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    shown = stedloop("session", "show", session_id[:8], "--json", home=isolated_home)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)  # stdout stays clean JSON; the note goes to stderr
    assert f"'{session_id[:8]}' is a prefix of session {session_id}" in shown.stderr
    exact = stedloop("session", "show", session_id, home=isolated_home)
    assert exact.returncode == 0 and "prefix" not in exact.stderr
