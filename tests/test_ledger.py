"""The append-only SQLite ledger and the session store, on real files."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from stedloop.errors import DataError
from stedloop.store import SessionNotFound, SessionStore
from stedloop.store import ledger as L
from stedloop.store.history import SessionHistory
from stedloop.store.ledger import Ledger
from stedloop.store.lock import FolderLock, SessionBusy


def test_append_returns_increasing_seq_and_events_read_back(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", create=True)
    seqs = [ledger.append(L.PROPOSED, {"params": {"a": i}}, frame=i) for i in range(3)]
    assert seqs == [1, 2, 3]
    events = ledger.events()
    assert [e.kind for e in events] == [L.PROPOSED] * 3
    assert [e.payload["params"]["a"] for e in events] == [0, 1, 2]
    assert [e.seq for e in ledger.events(since=2)] == [3]
    assert ledger.last_seq() == 3


def test_events_survive_reopening_without_close(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    writer = Ledger(path, create=True)
    writer.append(L.TOLD, {"score": 0.5}, frame=0)
    # A second connection (another process in real life) sees the committed event at once.
    reader = Ledger(path, readonly=True)
    assert reader.events()[0].payload == {"score": 0.5}


def test_ledger_is_wal_with_full_sync_and_append_only(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = Ledger(path, create=True)
    ledger.append(L.ERROR, {"error": "x"})
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE events SET kind='told'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("DELETE FROM events")
    assert len(ledger.events()) == 1


def test_nan_is_stored_as_null_and_unknown_kinds_are_refused(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", create=True)
    ledger.append(L.SCORED, {"values": {"q": float("nan")}, "combined": float("inf")})
    assert ledger.events()[0].payload == {"values": {"q": None}, "combined": None}
    with pytest.raises(ValueError, match="unknown ledger event kind"):
        ledger.append("deleted", {})


def test_readonly_handle_refuses_writes_and_missing_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    Ledger(path, create=True).append(L.OPENED, {})
    with pytest.raises(DataError, match="read-only"):
        Ledger(path, readonly=True).append(L.OPENED, {})
    with pytest.raises(DataError, match="no ledger"):
        Ledger(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(DataError, match="not a readable SQLite"):
        Ledger(tmp_path / "junk.sqlite")


def test_concurrent_appends_from_threads_keep_every_event(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", create=True)

    def writer(offset: int) -> None:
        for i in range(25):
            ledger.append(L.TOLD, {"i": offset + i})

    threads = [threading.Thread(target=writer, args=(k * 100,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values = sorted(e.payload["i"] for e in ledger.events())
    assert values == sorted(k * 100 + i for k in range(4) for i in range(25))


def test_store_create_list_open_and_prefix(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions")
    assert store.list() == []
    record = store.create({"seed": 1, "objectives": []}, name="first")
    record.ledger.append(L.PROPOSED, {"params": {"dwell_time_us": 1.0}}, frame=0)
    record.ledger.append(L.SCORED, {"values": {}, "combined": 0.4}, frame=0)
    record.ledger.append(L.TOLD, {"score": 0.4}, frame=0)
    infos = store.list()
    assert [i.id for i in infos] == [record.id]
    assert infos[0].name == "first" and infos[0].frames == 1 and infos[0].best_score == 0.4
    assert infos[0].interrupted  # no stopped/finished event yet
    record.ledger.append(L.FINISHED, {"reason": "budget"})
    assert store.info(record.id).state == "finished"
    assert store.open(record.id[:15]).id == record.id  # unique prefix
    with pytest.raises(SessionNotFound, match="no session"):
        store.open("nope")
    with pytest.raises(SessionNotFound, match="not a session id"):
        store.open("../etc")


def test_history_tracks_frame_outcomes_and_in_flight_frame() -> None:
    def ev(seq: int, kind: str, frame: int | None, payload: dict) -> L.Event:
        return L.Event(seq, kind, frame, float(seq), payload)

    params = {"dwell_time_us": 1.0, "excitation_uw": 1.0, "depletion_mw": 1.0}
    history = SessionHistory.from_events(
        [
            ev(1, L.CREATED, None, {"seed": 3}),
            ev(2, L.PROPOSED, 0, {"params": params}),
            ev(
                3, L.ACQUIRING, 0, {"region": {"x_um": 0, "y_um": 0, "width_px": 8, "height_px": 8}}
            ),
            ev(4, L.ACQUIRED, 0, {"tiff": "frames/0000.ome.tif"}),
            ev(5, L.SCORED, 0, {"values": {"q": 0.7}, "combined": 0.7}),
            ev(6, L.TOLD, 0, {"score": 0.7}),
            ev(7, L.PROPOSED, 1, {"params": params}),
            ev(8, L.SCORED, 1, {"values": {"q": None}, "errors": {"q": "nan"}, "combined": None}),
            ev(9, L.FAILED, 1, {"reason": "q: nan"}),
            ev(10, L.PROPOSED, 2, {"params": params}),
        ]
    )
    assert [f.status for f in history.done_frames()] == ["told", "failed"]
    assert history.in_flight().frame == 2
    assert history.best().frame == 0
    assert history.frames[0].tiff == "frames/0000.ome.tif"
    assert len(history.used_regions()) == 1
    assert history.interrupted


def test_folder_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    first, second = FolderLock(tmp_path), FolderLock(tmp_path)
    first.acquire()
    assert second.is_held_elsewhere()
    with pytest.raises(SessionBusy):
        second.acquire()
    first.release()
    assert not second.is_held_elsewhere()
