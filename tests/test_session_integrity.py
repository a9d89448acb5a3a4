"""Recorded data survives crashes and a full disk: frames are written once, a scored frame is
never acquired again, a session stopped by the disk resumes once space is freed, no litter.

Real simulator, real ledger and TIFFs; crashes are reproduced by cutting the ledger where a
kill would have cut it, and a full disk by an ``OSError(ENOSPC)`` at the file-writing boundary.
"""

from __future__ import annotations

import errno
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from test_session_loop import SpyDriver, config, objectives

from stedloop import events as ev
from stedloop.driver import AcquireRequest
from stedloop.errors import DataError, StorageError
from stedloop.frame import Frame
from stedloop.server.engine import open_session
from stedloop.session import Session
from stedloop.store import SessionStore
from stedloop.store import ledger as L
from stedloop.store.frames import read_frame, remove_stale_temp_files, write_frame
from stedloop.wire.protocol import ProtocolError


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def frame_files(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "frames").iterdir())


def cut_ledger_at(folder: Path, kind: str, frame: int) -> None:
    """Delete the ledger from ``kind`` of ``frame`` on: what a kill just before it leaves."""
    db = sqlite3.connect(folder / "ledger.sqlite")
    db.execute("DROP TRIGGER events_no_delete")
    (seq,) = db.execute(
        "SELECT MIN(seq) FROM events WHERE kind = ? AND frame = ?", (kind, frame)
    ).fetchone()
    db.execute("DELETE FROM events WHERE seq >= ?", (seq,))
    db.commit()
    db.close()


def finished_session(tmp_path: Path, budget: int) -> tuple[Session, SessionStore]:
    loaded = config(budget=budget)
    store = SessionStore(tmp_path / "sessions")
    session = Session.start(loaded, SpyDriver(loaded), store=store, objectives=objectives())
    assert session.run().state == "finished"
    session.close()
    return session, store


def resume(store: SessionStore, session_id: str, budget: int) -> tuple[Session, SpyDriver]:
    loaded = config(budget=budget)
    driver = SpyDriver(loaded)
    return (
        Session.resume(session_id, loaded, driver, store=store, objectives=objectives()),
        driver,
    )


def history(store: SessionStore, session_id: str) -> Any:
    record = store.open(session_id, readonly=True)
    try:
        return record.history()
    finally:
        record.close()


# -- a frame scored but not told, and frame files written once ---------------------------------
def test_a_scored_frame_is_told_from_the_ledger_and_never_acquired_again(tmp_path: Path) -> None:
    session, store = finished_session(tmp_path, budget=3)
    cut_ledger_at(session.folder, L.TOLD, 2)  # killed between frame 2's scored and told
    before = history(store, session.id)
    assert before.frames[2].status == "scored" and before.interrupted
    tiff = session.folder / before.frames[2].tiff
    recorded_hash = digest(tiff)
    scores = [before.frames[k].combined for k in range(3)]

    resumed, driver = resume(store, session.id, budget=4)
    assert resumed.optimizer.n_told == 3
    assert resumed.optimizer._scores == scores  # frame 2 told its recorded score
    summary = resumed.run()
    resumed.close()

    assert summary.state == "finished" and summary.frames == 4
    assert driver.acquires == 1  # frame 3 only: frame 2 was not exposed again
    assert digest(tiff) == recorded_hash
    assert frame_files(session.folder) == [f"{k:04d}.ome.tif" for k in range(4)]
    after = history(store, session.id)
    assert [f.status for f in after.done_frames()] == ["told"] * 4
    told = [e for e in store.open(session.id).ledger.events() if e.kind == L.TOLD and e.frame == 2]
    assert len(told) == 1
    outcome = after.frames[2].outcome
    assert isinstance(outcome, ev.Told) and outcome.combined == scores[2]
    assert outcome.from_ledger is True and outcome.frames_done == 3
    assert len(after.frames[2].regions) == 1


def test_a_frame_scored_as_failed_is_recorded_failed_on_resume(tmp_path: Path) -> None:
    session, store = finished_session(tmp_path, budget=2)
    cut_ledger_at(session.folder, L.TOLD, 1)
    db = sqlite3.connect(session.folder / "ledger.sqlite")  # frame 1's objectives had failed
    db.execute("DROP TRIGGER events_no_update")
    db.execute(
        "UPDATE events SET payload = ? WHERE kind = 'scored' AND frame = 1",
        ('{"values": {"resolution": null}, "errors": {"resolution": "nan"}, "combined": null}',),
    )
    db.commit()
    db.close()
    resumed, driver = resume(store, session.id, budget=2)
    summary = resumed.run()
    resumed.close()
    assert summary.frames == 2 and driver.acquires == 0
    assert [f.status for f in history(store, session.id).done_frames()] == ["told", "failed"]


def test_a_frame_file_without_its_ledger_record_is_kept_aside_and_the_frame_redone(
    tmp_path: Path,
) -> None:
    session, store = finished_session(tmp_path, budget=3)
    cut_ledger_at(session.folder, L.ACQUIRED, 2)  # TIFF written, then killed before `acquired`
    orphan = session.folder / "frames" / "0002.ome.tif"
    orphan_hash = digest(orphan)

    resumed, driver = resume(store, session.id, budget=3)
    summary = resumed.run()
    resumed.close()

    assert summary.frames == 3 and driver.acquires == 1  # frame 2 redone
    kept = session.folder / "frames" / "0002.orphan-1.ome.tif"
    assert digest(kept) == orphan_hash  # the unrecorded file is kept, unchanged
    assert digest(orphan) != orphan_hash  # the redone frame has its own file
    after = history(store, session.id)
    assert after.frames[2].tiff == "frames/0002.ome.tif"
    assert len(after.frames[2].regions) == 2  # a fresh region for the redo
    notes = [e for e in after.frames[2].errors if e.kept_as]
    assert notes and notes[0].kept_as == "frames/0002.orphan-1.ome.tif"


def test_a_recorded_frame_file_that_is_damaged_is_kept_and_the_frame_redone(
    tmp_path: Path,
) -> None:
    session, store = finished_session(tmp_path, budget=3)
    cut_ledger_at(session.folder, L.SCORED, 2)  # recorded, then killed before scoring
    damaged = session.folder / "frames" / "0002.ome.tif"
    damaged.write_bytes(damaged.read_bytes()[:200])
    resumed, driver = resume(store, session.id, budget=3)
    summary = resumed.run()
    resumed.close()
    assert summary.frames == 3 and driver.acquires == 1
    assert (session.folder / "frames" / "0002.orphan-1.ome.tif").stat().st_size == 200
    tifffile.imread(damaged)  # the redone frame is whole


def test_frame_files_are_never_overwritten(tmp_path: Path) -> None:
    session, _ = finished_session(tmp_path, budget=1)
    path = session.folder / "frames" / "0000.ome.tif"
    recorded_hash = digest(path)
    with pytest.raises(DataError, match="refusing to overwrite"):
        write_frame(path, read_frame(path))
    assert digest(path) == recorded_hash
    assert frame_files(session.folder) == ["0000.ome.tif"]


# -- a full disk --------------------------------------------------------------------------------
def test_a_full_disk_stops_the_session_clearly_and_it_resumes_once_space_is_freed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = config(budget=4)
    store = SessionStore(tmp_path / "sessions")
    driver = SpyDriver(loaded)
    session = Session.start(loaded, driver, store=store, objectives=objectives())
    calls = {"n": 0}
    real = tifffile.imwrite

    def imwrite(file: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:  # the disk fills up while frame 2 is written
            Path(file).write_bytes(b"\0" * 64)
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", imwrite)
    summary = session.run()
    session.close()
    assert summary.state == "failed" and summary.frames == 2
    assert "No space left on device" in summary.stop_reason
    assert "resume" in summary.stop_reason
    assert driver.acquires == 3  # it stopped at once: no frame exposed without being stored
    assert frame_files(session.folder) == ["0000.ome.tif", "0001.ome.tif"]  # no temp file

    monkeypatch.setattr(tifffile, "imwrite", real)  # space freed
    resumed, again = resume(store, session.id, budget=4)
    summary = resumed.run()
    resumed.close()
    assert summary.state == "finished" and summary.frames == 4 and again.acquires == 2
    assert frame_files(session.folder) == [f"{k:04d}.ome.tif" for k in range(4)]


class FillsUp:
    """The session's SQLite connection on a disk that fills up after ``inserts`` more events."""

    def __init__(self, db: Any, inserts: int) -> None:
        self.db, self.left = db, inserts

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("INSERT"):
            if self.left == 0:
                raise sqlite3.OperationalError("database or disk is full")
            self.left -= 1
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_a_ledger_on_a_full_disk_stops_the_session_and_it_resumes_once_space_is_freed(
    tmp_path: Path,
) -> None:
    loaded = config(budget=3)
    store = SessionStore(tmp_path / "sessions")
    session = Session.start(loaded, SpyDriver(loaded), store=store, objectives=objectives())
    # opened, then frame 0 (proposed, acquiring, acquired, scored, told), then frame 1's
    # proposed and acquiring: the disk is full when frame 1's TIFF is written but not recorded
    session.record.ledger._db = FillsUp(session.record.ledger._db, inserts=8)
    summary = session.run()
    session.close()
    assert summary.state == "failed" and summary.frames == 1
    assert "disk is full" in summary.stop_reason and "resume" in summary.stop_reason
    assert history(store, session.id).interrupted  # even the stop could not be recorded

    resumed, driver = resume(store, session.id, budget=3)
    summary = resumed.run()
    resumed.close()
    assert summary.state == "finished" and summary.frames == 3 and driver.acquires == 2
    events = store.open(session.id).ledger.events()
    assert sorted(e.frame for e in events if e.kind == L.TOLD) == [0, 1, 2]
    assert "0001.orphan-1.ome.tif" in frame_files(session.folder)  # the unrecorded file kept


class OverflowOn:
    """The simulator, with one frame's counts beyond uint16 (the TIFF write refuses it)."""

    def __init__(self, driver: SpyDriver, frame: int) -> None:
        self.driver, self.frame, self.calls = driver, frame, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.driver, name)

    def acquire(self, request: AcquireRequest) -> Frame:
        frame = self.driver.acquire(request)
        self.calls += 1
        if self.calls - 1 != self.frame:
            return frame
        hot = np.full(frame.confocal_before.shape, 70000, dtype=np.int64)
        return Frame(
            confocal_before=hot,
            sted=frame.sted,
            confocal_after=frame.confocal_after,
            params=frame.params,
            region=frame.region,
            pixel_size_nm=frame.pixel_size_nm,
            started_at_s=frame.started_at_s,
            finished_at_s=frame.finished_at_s,
        )


def test_a_frame_acquired_without_a_file_is_redone_on_resume(tmp_path: Path) -> None:
    """An `acquired` event with no TIFF (the write failed) followed by a crash: the resume
    redid nothing and raised TypeError ('PosixPath' / 'NoneType')."""
    loaded = config(budget=3)
    store = SessionStore(tmp_path / "sessions")
    driver = OverflowOn(SpyDriver(loaded), frame=1)
    session = Session.start(loaded, driver, store=store, objectives=objectives())
    assert session.run().frames == 3
    session.close()
    cut_ledger_at(session.folder, L.SCORED, 1)
    assert history(store, session.id).frames[1].tiff is None

    resumed, again = resume(store, session.id, budget=3)
    summary = resumed.run()
    resumed.close()
    assert summary.frames == 3 and again.acquires == 2  # frame 1 redone, then frame 2
    assert history(store, session.id).frames[1].tiff == "frames/0001.ome.tif"


class FullDiskConnection:
    """An SQLite connection whose writes fail as SQLite's do on a full disk."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("PRAGMA user_version"):
            return self.db.execute(sql, *args)
        raise sqlite3.OperationalError("database or disk is full")

    def close(self) -> None:
        self.db.close()


def full_disk_for_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = sqlite3.connect
    monkeypatch.setattr(
        L.sqlite3, "connect", lambda *a, **k: FullDiskConnection(real_connect(*a, **k))
    )


def test_creating_a_session_on_a_full_disk_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = config(budget=1)
    store = SessionStore(tmp_path / "sessions")
    full_disk_for_sqlite(monkeypatch)
    with pytest.raises(StorageError, match="disk is full"):
        Session.start(loaded, SpyDriver(loaded), store=store, objectives=objectives())
    assert list((tmp_path / "sessions").iterdir()) == []  # no folder, no 0-byte ledger
    monkeypatch.undo()  # space freed
    session = Session.start(loaded, SpyDriver(loaded), store=store, objectives=objectives())
    assert session.run().state == "finished"
    session.close()


def test_the_daemon_answers_a_start_on_a_full_disk_with_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon's session engine opens sessions with `open_session`; its ProtocolError is
    # the daemon's reply to session.start.
    loaded = config(budget=1)
    store = SessionStore(tmp_path / "sessions")
    full_disk_for_sqlite(monkeypatch)
    with pytest.raises(ProtocolError) as info:
        open_session(loaded, SpyDriver(loaded), store, None)
    assert info.value.code == "storage" and "disk is full" in info.value.message
    assert list((tmp_path / "sessions").iterdir()) == []


def test_temporary_files_of_killed_writes_are_removed_on_resume(tmp_path: Path) -> None:
    session, store = finished_session(tmp_path, budget=2)
    frames = session.folder / "frames"
    litter = [frames / ".0002.ome.tif.k2j4_x.tmp", frames / ".0001.ome.tif.abc.tmp"]
    for path in litter:
        path.write_bytes(b"half a frame")
    keep = frames / "notes.tmp"  # not ours: left alone
    keep.write_text("mine")
    resumed, _ = resume(store, session.id, budget=2)
    assert all(p.exists() for p in litter)  # not before the run holds the session's lock
    resumed.run()
    resumed.close()
    assert not any(p.exists() for p in litter) and keep.exists()
    assert remove_stale_temp_files(tmp_path / "no-such-folder") == []
