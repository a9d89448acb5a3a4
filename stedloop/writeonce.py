"""Give a finished temporary file its final name without ever replacing an existing file.

``os.replace`` silently overwrites; a recorded frame must never be overwritten. On POSIX a
hard link is atomic and fails when the name exists; on Windows ``os.rename`` already refuses an
existing target. A file system without hard links (some network or FAT mounts) falls back to
check-then-rename, which is safe because one process at a time writes a session (its lock).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

#: ``link`` errors meaning "this file system has no hard links", not "the name is taken".
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


def publish_new(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; ``FileExistsError`` (and ``tmp`` kept) if ``final`` exists."""
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        os.rename(tmp, final)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(final)) from None
        os.rename(tmp, final)
        return
    os.unlink(tmp)
