"""One damaged session never takes the others down: random bytes in a ledger, a row with
invalid JSON, a row of the wrong shape. The store lists it as unreadable with the reason; the
CLI says so in one line (non-zero for commands on that session); the daemon starts and serves
the others. Real SQLite files, a real `stedloop` and `stedloop serve` as subprocesses."""

from __future__ import annotations

import json
import random
import re
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import run_stedloop
from test_session_loop import SpyDriver, config, objectives

from stedloop.client import Client, DaemonError
from stedloop.client.local_daemon import start_daemon, stop_daemon
from stedloop.errors import DataError
from stedloop.session import Session, interrupted_sessions
from stedloop.store import SessionStore
from stedloop.store.ledger import Ledger

SITE = """
[objectives]
names = ["resolution", "bleaching"]
[optimizer]
n_candidates = 300
[session]
retry_delay_s = 0.0
[drivers.simulator]
field_px = 64
sample_fields = 4
"""


def new_session(store: SessionStore, budget: int = 2) -> str:
    loaded = config(budget=budget)
    session = Session.start(loaded, SpyDriver(loaded), store=store, objectives=objectives())
    session.run()
    session.close()
    return session.id


def random_pages(ledger: Path) -> None:
    """Random bytes over the pages after the header (the file still opens as SQLite)."""
    data = bytearray(ledger.read_bytes())
    noise = random.Random(1)
    for i in range(4096, len(data)):
        data[i] = noise.randrange(256)
    ledger.write_bytes(bytes(data))


def random_file(ledger: Path) -> None:
    ledger.write_bytes(random.Random(2).randbytes(8192))


def set_payload(ledger: Path, kind: str, payload: str) -> None:
    db = sqlite3.connect(ledger)
    db.execute("DROP TRIGGER events_no_update")
    db.execute(
        "UPDATE events SET payload = ? WHERE seq = (SELECT MIN(seq) FROM events WHERE kind = ?)",
        (payload, kind),
    )
    db.commit()
    db.close()


DAMAGES = {
    "random bytes in the pages": (random_pages, "malformed"),
    "random bytes for a file": (random_file, "not a readable SQLite database"),
    "invalid JSON in a row": (
        lambda p: set_payload(p, "acquired", "{not json"),
        r"event \d+ \(acquired\) has a payload that is not JSON",
    ),
    "a row of the wrong shape": (
        lambda p: set_payload(p, "proposed", '{"params": [1, 2, 3]}'),
        r"event \d+ \(proposed\) is malformed",
    ),
    "an empty ledger": (lambda p: p.write_bytes(b""), "is empty"),
}


@pytest.fixture
def damaged_store(tmp_path: Path) -> tuple[SessionStore, str, str]:
    """A store with a good session and one to damage (returned: store, good id, bad id)."""
    store = SessionStore(tmp_path / "home" / "sessions")
    good = new_session(store)
    bad = new_session(store)
    return store, good, bad


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_session_is_listed_as_unreadable_and_the_others_as_usual(
    damaged_store: tuple[SessionStore, str, str], damage: str
) -> None:
    store, good, bad = damaged_store
    corrupt, reason = DAMAGES[damage]
    corrupt(store.root / bad / "ledger.sqlite")
    infos = {info.id: info for info in store.list()}
    assert infos[good].state == "finished" and infos[good].reason is None
    assert infos[bad].state == "unreadable" and not infos[bad].interrupted
    assert infos[bad].reason is not None
    assert infos[bad].as_dict()["reason"] == infos[bad].reason
    assert re.search(reason, infos[bad].reason), infos[bad].reason
    assert [i.id for i in interrupted_sessions(store)] == []
    with pytest.raises(DataError, match=reason):
        record = store.open(bad, readonly=True)
        try:
            record.history()
        finally:
            record.close()


def test_ledger_rows_are_checked_when_read(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", create=True)
    ledger.append("opened", {"resumed": False})
    ledger.close()
    set_payload(tmp_path / "l.sqlite", "opened", "[1, 2]")  # JSON, but not an object
    with pytest.raises(DataError, match=r"event 1 is not a valid 'opened' event"):
        Ledger(tmp_path / "l.sqlite", readonly=True).events()


def test_a_newer_schema_is_refused_without_being_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    Ledger(path, create=True).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.commit()
    db.close()
    with pytest.raises(DataError, match="schema version 7"):
        Ledger(path)  # opened for writing: it must not stamp its own version on the file
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 7
    db.close()


def test_the_cli_says_one_line_per_damaged_session(
    damaged_store: tuple[SessionStore, str, str],
) -> None:
    store, good, bad = damaged_store
    random_pages(store.root / bad / "ledger.sqlite")
    site = store.root.parent / "site.toml"
    site.write_text(SITE)
    env = {"STEDLOOP_HOME": str(store.root.parent), "STEDLOOP_CONFIG": str(site)}

    listing = run_stedloop("session", "ls", env=env)
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line for line in listing.stdout.splitlines()}
    assert "unreadable" in lines[bad] and "malformed" in lines[bad]
    assert "finished" in lines[good]
    as_json = json.loads(run_stedloop("session", "ls", "--json", env=env).stdout)
    states = {entry["id"]: (entry["state"], entry["reason"]) for entry in as_json}
    assert states[bad][0] == "unreadable" and "malformed" in states[bad][1]
    assert states[good] == ("finished", None)

    for args in (
        ("session", "show", bad),
        ("session", "export", bad),
        ("optimize", "--resume", bad),
    ):
        result = run_stedloop(*args, env=env)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: ") and bad in errors[0], errors
    assert run_stedloop("session", "show", good, env=env).returncode == 0


def test_the_daemon_starts_and_serves_the_others(
    damaged_store: tuple[SessionStore, str, str],
) -> None:
    store, good, bad = damaged_store
    invalid_json = new_session(store)
    random_pages(store.root / bad / "ledger.sqlite")
    set_payload(store.root / invalid_json / "ledger.sqlite", "scored", "{oops")
    home = store.root.parent
    site = home / "site.toml"
    site.write_text(SITE)
    process, ready = start_daemon(home, {"STEDLOOP_CONFIG": str(site)})
    try:
        with Client(ready["request_address"]) as client:
            assert client.call("status")["interrupted"] == []
            listed = {s["id"]: s for s in client.call("sessions.list")["sessions"]}
            assert listed[good]["state"] == "finished"
            for damaged in (bad, invalid_json):
                assert listed[damaged]["state"] == "unreadable", listed[damaged]
                assert listed[damaged]["reason"] and not listed[damaged]["interrupted"]
                with pytest.raises(DaemonError) as info:
                    client.call("session.get", session_id=damaged)
                assert info.value.code == "storage" and damaged in info.value.message
                with pytest.raises(DaemonError) as info:
                    client.call("frame.get", session_id=damaged, frame=0)
                assert info.value.code == "storage"
                with pytest.raises(DaemonError) as info:
                    client.call("session.start", resume=damaged)
                assert info.value.code == "storage" and "damaged" in info.value.message
            assert client.call("session.get", session_id=good)["frames_done"] == 2
            assert client.call("ping")["pong"] is True
        env = {"STEDLOOP_HOME": str(home), "STEDLOOP_CONFIG": str(site)}
        listed = run_stedloop("ls", "--connect", ready["request_address"], env=env)
        assert listed.returncode == 0, listed.stderr
        lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
        assert "unreadable" in lines[bad] and "malformed" in lines[bad]
        assert "unreadable" in lines[invalid_json] and "not JSON" in lines[invalid_json]
    finally:
        assert stop_daemon(process) == 0
