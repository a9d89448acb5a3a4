"""An exclusive lock on a session folder while a process runs the session.

The operating system releases it when the process dies (even by ``kill -9``), so a crashed
session is never mistaken for a running one.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from stedloop.errors import StedloopError

LOCK_NAME = "session.lock"
#: errno values of a lock attempt that mean "another process holds it" (POSIX and Windows).
_HELD_ELSEWHERE = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK}


class SessionBusy(StedloopError):
    """Another process is running this session."""


def open_locked(path: Path) -> int | None:
    """A descriptor of ``path`` (created if missing) holding its exclusive lock, or None when
    another process holds it. The OS releases the lock when the process dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        lock_fd(fd)
    except OSError as exc:
        os.close(fd)
        if exc.errno in _HELD_ELSEWHERE:
            return None
        raise  # e.g. no locks on this file system: not "in use", say what it is
    return fd


class FolderLock:
    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = open_locked(self.path)
        if fd is None:
            raise SessionBusy(f"session {self.path.parent.name} is being run by another process")
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                unlock_fd(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None

    def is_held_elsewhere(self) -> bool:
        """True when another process holds the lock right now."""
        if not self.path.exists():
            return False
        try:
            self.acquire()
        except SessionBusy:
            return True
        self.release()
        return False


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def lock_fd(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def unlock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def lock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
