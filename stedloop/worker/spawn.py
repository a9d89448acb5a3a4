"""How stedloop starts a child that must outlive a Ctrl-C at its parent's terminal and keep
the instrument claimed: the driver worker and the daemon's session engine."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import Any


def detached_child_kwargs(inherit_fds: Sequence[int]) -> dict[str, Any]:
    """``subprocess.Popen`` keywords for such a child: its stdin a pipe (for its start-up
    message), its own process group or session (a Ctrl-C reaches the parent, which then makes
    the lasers safe through the child, instead of killing both at once) and, on POSIX,
    ``inherit_fds`` (e.g. the instrument claim's lock: held until the child too has exited,
    so no second process takes the instrument while an orphaned child makes it safe)."""
    kwargs: dict[str, Any] = {"stdin": subprocess.PIPE}
    if os.name == "nt":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    else:
        kwargs["start_new_session"] = True
        kwargs["pass_fds"] = tuple(inherit_fds)
    return kwargs
