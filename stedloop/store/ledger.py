"""The append-only event ledger of one session, in SQLite.

The ledger is the truth about a session: the optimizer state, the frame table, the Pareto
front and the session state are all derived from it. Durability rules:

* WAL journal and ``synchronous=FULL``: an ``append`` that returned survives a power cut or a
  ``kill -9`` one instruction later.
* One transaction per event, committed before ``append`` returns, so the loop never starts
  the next step before the previous one is on disk.
* Append-only: triggers refuse ``UPDATE`` and ``DELETE`` on the events table.

Readers (the daemon, ``stedloop session show``) may open the same file concurrently; WAL lets
them read while the session writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stedloop.errors import DataError, StorageError
from stedloop.events import LEDGER_KINDS, SessionEvent

SCHEMA_VERSION = 1

# Event kinds (the classes and their fields: ``stedloop.events``). A frame's life: proposed ->
# acquiring (per attempt) -> acquired -> scored -> told | failed; an attempt that raises adds
# an error event.
CREATED = "created"  # payload: config snapshot, parameter space, objectives, seed, driver
OPENED = "opened"  # a run of the session began (the first, or a resume)
PROPOSED = "proposed"
ACQUIRING = "acquiring"
ACQUIRED = "acquired"
SCORED = "scored"
TOLD = "told"
FAILED = "failed"  # the point is recorded as failed and never told as a number
ERROR = "error"
PAUSED = "paused"
RESUMED = "resumed"
STOPPED = "stopped"  # terminal for this run: user stop, abort, driver failure, interruption
FINISHED = "finished"  # terminal: budget spent, target reached, sample used up
KINDS = LEDGER_KINDS
TERMINAL = frozenset({STOPPED, FINISHED})

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    frame INTEGER,
    time_s REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_frame ON events(frame);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
PRAGMA user_version = {SCHEMA_VERSION};
"""


@dataclass(frozen=True)
class Event:
    """One ledger row."""

    seq: int
    kind: str
    frame: int | None
    time_s: float
    payload: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "frame": self.frame,
            "time_s": self.time_s,
            "payload": self.payload,
        }


def _json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON: store them as null (a failed value stays failed)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


#: SQLite result codes that blame the disk (full, I/O, read-only, permissions), not the file.
_STORAGE_CODES = frozenset({3, 8, 10, 13, 14})  # PERM, READONLY, IOERR, FULL, CANTOPEN


def _is_storage_failure(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return (code & 0xFF) in _STORAGE_CODES
    text = str(exc).lower()
    return any(w in text for w in ("disk is full", "disk i/o", "readonly", "unable to open"))


class Ledger:
    """Append-only event log in ``path`` (created when ``create`` is true)."""

    def __init__(self, path: Path, *, create: bool = False, readonly: bool = False) -> None:
        self.path = Path(path)
        exists = self.path.exists()
        if not create and not exists:
            raise DataError(f"no ledger at {self.path}")
        if not create and self.path.is_file() and self.path.stat().st_size == 0:
            raise DataError(f"ledger {self.path} is empty (no event was ever recorded in it)")
        try:
            # readonly only means "this handle never writes": SQLite's own read-only mode
            # cannot read a WAL database whose shared-memory file does not exist yet.
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if not readonly and (version == SCHEMA_VERSION or (create and version == 0)):
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
                version = SCHEMA_VERSION
        except sqlite3.Error as exc:
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self._db.close()
            if not exists or _is_storage_failure(exc):
                verb = "create" if not exists else "open"
                raise StorageError(f"cannot {verb} ledger {self.path}: {exc}") from None
            raise DataError(
                f"ledger {self.path} is not a readable SQLite database: {exc}"
            ) from None
        if version != SCHEMA_VERSION:
            self._db.close()
            raise DataError(
                f"ledger {self.path} has schema version {version}; this stedloop reads "
                f"version {SCHEMA_VERSION}"
            )
        self._readonly = readonly
        self._lock = threading.Lock()

    def append(
        self, kind: str, payload: Mapping[str, Any] | None = None, *, frame: int | None = None
    ) -> int:
        """Write one event durably; returns its sequence number (1, 2, ...)."""
        if self._readonly:
            raise DataError(f"ledger {self.path} was opened read-only")
        if kind not in KINDS:
            raise ValueError(f"unknown ledger event kind {kind!r}")
        text = json.dumps(_json_safe(dict(payload or {})), allow_nan=False, default=str)
        with self._lock:
            try:
                cursor = self._db.execute(
                    "INSERT INTO events(kind, frame, time_s, payload) VALUES (?, ?, ?, ?)",
                    (kind, frame, time.time(), text),
                )
            except sqlite3.Error as exc:  # "database or disk is full", "disk I/O error"...
                raise StorageError(f"cannot write to ledger {self.path}: {exc}") from None
            if cursor.lastrowid is None:  # sqlite3 sets it after every successful INSERT
                raise StorageError(f"ledger {self.path} gave no row id for the new event")
            return cursor.lastrowid

    def record(self, event: SessionEvent) -> int:
        """Write a session event durably (the ledger is its first subscriber)."""
        return self.append(event.kind, event.ledger_payload(), frame=event.frame_no)

    def events(self, since: int = 0) -> list[Event]:
        """Every event with ``seq > since``, in order; ``DataError`` naming a damaged row."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, kind, frame, time_s, payload FROM events WHERE seq > ? "
                    "ORDER BY seq",
                    (since,),
                ).fetchall()
            except sqlite3.Error as exc:  # e.g. "database disk image is malformed"
                raise DataError(f"ledger {self.path} is damaged: {exc}") from None
        return [self._event(row) for row in rows]

    def _event(self, row: tuple[Any, ...]) -> Event:
        seq, kind, frame, time_s, text = row
        try:
            payload = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"ledger {self.path} is damaged: event {seq} ({kind}) has a payload that is "
                f"not JSON ({exc})"
            ) from None
        if (
            not isinstance(payload, dict)
            or kind not in KINDS
            or not (frame is None or type(frame) is int)
            or not isinstance(time_s, (int, float))
        ):
            raise DataError(
                f"ledger {self.path} is damaged: event {seq} is not a valid {kind!r} event"
            )
        return Event(seq, kind, frame, float(time_s), payload)

    def last_seq(self) -> int:
        with self._lock:
            try:
                row = self._db.execute("SELECT MAX(seq) FROM events").fetchone()
            except sqlite3.Error as exc:
                raise DataError(f"ledger {self.path} is damaged: {exc}") from None
        return int(row[0] or 0)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
