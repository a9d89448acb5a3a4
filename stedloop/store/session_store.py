"""Sessions on disk: one folder per session under the data directory.

A session folder holds ``ledger.sqlite`` (the append-only event log, the truth) and
``frames/NNNN.ome.tif`` (frame NNNN's confocal-before, STED and confocal-after images).
A folder is created whole or not at all, and a damaged one is listed as ``unreadable`` with
the reason instead of breaking the listing of the others.
"""

from __future__ import annotations

import builtins
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stedloop import paths
from stedloop.config.schema import StedloopConfig
from stedloop.errors import DataError, StedloopError, StorageError
from stedloop.store import ledger as L
from stedloop.store.history import SessionHistory
from stedloop.store.ledger import Ledger

LEDGER_NAME = "ledger.sqlite"
FRAMES_DIR = "frames"
#: ``SessionInfo.state`` of a session whose ledger cannot be read (``reason`` says why).
UNREADABLE = "unreadable"
#: What a session id (or a prefix of one) may hold: ``create`` makes ``20261126-120102-3f2a``.
SESSION_ID_CHARS = re.compile(r"[A-Za-z0-9_-]{1,128}")


class SessionNotFound(StedloopError):
    """No session with that id in the store."""


@dataclass(frozen=True)
class SessionInfo:
    """A one-line summary of a stored session, derived from its ledger."""

    id: str
    name: str | None
    folder: Path
    state: str  # open (running or interrupted), paused, stopped, finished, unreadable
    stop_reason: str | None
    frames: int  # frames with a final outcome
    best_score: float | None
    created_at_s: float
    updated_at_s: float
    reason: str | None = None  # why an unreadable session cannot be read

    @property
    def interrupted(self) -> bool:
        return self.state not in L.TERMINAL and self.state != UNREADABLE

    @classmethod
    def unreadable(cls, folder: Path, reason: str) -> SessionInfo:
        try:
            changed = (folder / LEDGER_NAME).stat().st_mtime
        except OSError:
            changed = 0.0
        return cls(folder.name, None, folder, UNREADABLE, None, 0, None, 0.0, changed, reason)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "folder": str(self.folder),
            "state": self.state,
            "stop_reason": self.stop_reason,
            "frames": self.frames,
            "best_score": self.best_score,
            "created_at_s": self.created_at_s,
            "updated_at_s": self.updated_at_s,
            "reason": self.reason,
        }


def creation_order_s(info: SessionInfo | dict[str, Any]) -> tuple[float, str]:
    """Sort key by creation time; an unreadable session (no creation time) sorts by when its
    ledger last changed, and the id breaks ties (sessions created within one clock tick)."""
    if isinstance(info, SessionInfo):
        created, changed, sid = info.created_at_s, info.updated_at_s, info.id
    else:
        created, changed, sid = info["created_at_s"], info["updated_at_s"], info["id"]
    return (float(created or changed or 0.0), str(sid))


@dataclass
class SessionRecord:
    """An open session folder: its id, ledger, and where its frames go."""

    id: str
    folder: Path
    ledger: Ledger

    def frame_path(self, frame: int) -> Path:
        return self.folder / FRAMES_DIR / f"{frame:04d}.ome.tif"

    def history(self) -> SessionHistory:
        """The ledger replayed; ``DataError`` naming the ledger and event if it is damaged."""
        events = self.ledger.events()
        try:
            return SessionHistory.from_events(events)
        except DataError as exc:
            raise DataError(f"ledger {self.ledger.path} is damaged: {exc}") from None

    def close(self) -> None:
        self.ledger.close()


class SessionStore:
    """The folder of sessions (``<data dir>/sessions``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def from_config(cls, config: StedloopConfig) -> SessionStore:
        """The store of the configured data directory (``$STEDLOOP_HOME`` wins)."""
        return cls(paths.sessions_dir(config.store.data_dir))

    def create(self, created: dict[str, Any], name: str | None = None) -> SessionRecord:
        """A new session folder whose ledger starts with a ``created`` event (``created``:
        the config snapshot, parameter space, objectives, seed and driver).

        All or nothing: if the disk refuses any part (full, read-only), what was made is
        removed and ``StorageError`` says why."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the sessions folder {self.root}: {exc}") from None
        for _ in range(20):
            session_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
            folder = self.root / session_id
            try:
                folder.mkdir()
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise StorageError(
                    f"cannot create a session folder in {self.root}: {exc}"
                ) from None
        else:  # pragma: no cover - 20 collisions of 16 random bits within a second
            raise DataError(f"cannot create a new session folder in {self.root}")
        ledger: Ledger | None = None
        try:
            (folder / FRAMES_DIR).mkdir()
            ledger = Ledger(folder / LEDGER_NAME, create=True)
            ledger.append(L.CREATED, {**created, "id": session_id, "name": name})
        except (OSError, StedloopError) as exc:
            if ledger is not None:
                ledger.close()
            shutil.rmtree(folder, ignore_errors=True)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StorageError(
                f"cannot create session {session_id} in {self.root}: {reason}"
            ) from None
        return SessionRecord(session_id, folder, ledger)

    def open(self, session_id: str, *, readonly: bool = False) -> SessionRecord:
        folder = self._folder(session_id)
        return SessionRecord(folder.name, folder, Ledger(folder / LEDGER_NAME, readonly=readonly))

    def info(self, session_id: str) -> SessionInfo:
        record = self.open(session_id, readonly=True)
        try:
            return _info(record.id, record.folder, record.history())
        finally:
            record.close()

    def list(self) -> list[SessionInfo]:
        """Every session, oldest first; one whose ledger cannot be read is listed with state
        ``unreadable`` and the reason, so one damaged session never hides the others."""
        try:
            folders = sorted(self.root.iterdir()) if self.root.is_dir() else []
        except OSError as exc:
            raise StorageError(f"cannot list the sessions in {self.root}: {exc}") from None
        infos = []
        for folder in folders:
            if not (folder / LEDGER_NAME).is_file():
                continue
            try:
                infos.append(self.info(folder.name))
            except (DataError, StorageError) as exc:
                infos.append(SessionInfo.unreadable(folder, str(exc)))
            except OSError as exc:  # e.g. no permission to read the folder
                infos.append(SessionInfo.unreadable(folder, f"cannot read {folder}: {exc}"))
        # Ids start with the creation second; within one second only the creation time orders.
        return sorted(infos, key=creation_order_s)

    def newest_first(self) -> builtins.list[SessionInfo]:
        """Every session as ``list`` gives them, the most recently created first (what a
        person scanning their sessions wants: today's run on top)."""
        return self.list()[::-1]

    def _folder(self, session_id: str) -> Path:
        """The folder of ``session_id``: an exact id, or a unique prefix of one (like git).

        Ids are compared as literal strings with the folder names, never as glob patterns or
        paths; ``SessionRecord.id`` is the full id, so callers can say when a prefix was
        expanded."""
        if not SESSION_ID_CHARS.fullmatch(session_id):
            # Not a path component stedloop makes; only a folder of exactly that name (put
            # there by hand) is accepted. iterdir never yields '.', '..' or separators.
            if session_id in self._session_names():
                return self.root / session_id
            raise SessionNotFound(
                f"{session_id!r} is not a session id: ids are letters, digits, '-' and '_' "
                "(see `stedloop session ls`)"
            )
        if (self.root / session_id / LEDGER_NAME).is_file():
            return self.root / session_id
        matches = sorted(name for name in self._session_names() if name.startswith(session_id))
        if len(matches) == 1:
            return self.root / matches[0]
        known = (
            "; use `stedloop session ls`"
            if not matches
            else f"; it is a prefix of {len(matches)} sessions: {', '.join(matches[:5])}"
            + (", …" if len(matches) > 5 else "")
        )
        raise SessionNotFound(f"no session {session_id!r} in {self.root}{known}")

    def _session_names(self) -> set[str]:
        """Names of the session folders (those holding a ledger)."""
        if not self.root.is_dir():
            return set()
        return {p.name for p in self.root.iterdir() if (p / LEDGER_NAME).is_file()}


def _info(session_id: str, folder: Path, history: SessionHistory) -> SessionInfo:
    best = history.best()
    return SessionInfo(
        id=session_id,
        name=history.created.get("name"),
        folder=folder,
        state=history.state,
        stop_reason=history.stop_reason,
        frames=history.frames_done,
        best_score=best.combined if best else None,
        created_at_s=history.created_at_s,
        updated_at_s=history.updated_at_s,
    )
