"""Opening the configured microscope: one stedloop process drives it at a time.

``open_driver`` is the one place that builds the configured driver, in a worker process or in
this one, from the site configuration. Before that, ``claim_instrument`` takes an exclusive
lock on the instrument: a lock file per driver name in the data folder, held by the daemon or
by ``stedloop optimize`` for as long as it may touch the driver. A second process that would
set the same lasers is refused with the first one's description, unless the user says the
driver may be shared (``--share-driver``; e.g. two independent simulators).

The operating system releases the lock when its process dies, even by ``kill -9``, so a
crashed daemon never blocks the next one.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stedloop import paths
from stedloop.config.schema import StedloopConfig
from stedloop.driver import Driver
from stedloop.errors import StedloopError
from stedloop.store.lock import open_locked, unlock_fd

LOCKS_DIR = "locks"
WorkerFaultCallback = Callable[[str, dict[str, Any]], None]


class InstrumentBusy(StedloopError):
    """Another stedloop process drives this instrument."""


class InstrumentClaim:
    """The held lock on one driver of one data folder; ``release`` (or process exit) ends it."""

    def __init__(self, lock_path: Path, holder_path: Path, driver_name: str) -> None:
        self.lock_path = lock_path
        self.holder_path = holder_path
        self.driver_name = driver_name
        self._fd: int | None = None

    def acquire(self, owner: str) -> None:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_locked(self.lock_path)
        if fd is None:
            raise InstrumentBusy(
                f"the {self.driver_name} driver is in use by {self._holder()} with data folder "
                f"{self.lock_path.parent.parent}; two programs must not set the same lasers. "
                "Stop it first, or pass --share-driver if this driver may be shared"
            )
        self._fd = fd
        # The holder's description lives beside the lock: a locked byte cannot be read on Windows.
        holder = {"pid": os.getpid(), "owner": owner, "since_s": time.time()}
        tmp = self.holder_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(holder))
            tmp.replace(self.holder_path)
        except OSError:
            self.release()  # never keep a lock nobody can release
            raise

    def inheritable_fds(self) -> tuple[int, ...]:
        """The lock's descriptor, for a child process that must hold the claim as long as it
        lives (POSIX: a lock belongs to the open file, shared with children that inherit it)."""
        return (self._fd,) if self._fd is not None and os.name != "nt" else ()

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.holder_path.unlink(missing_ok=True)
            unlock_fd(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None

    def _holder(self) -> str:
        try:
            holder = json.loads(self.holder_path.read_text())
            return f"{holder['owner']} (pid {int(holder['pid'])})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another stedloop process"


def instrument_claim(config: StedloopConfig) -> InstrumentClaim:
    """The (not yet held) claim on the configured driver in the configured data folder."""
    name = config.driver.name
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    folder = paths.data_dir(config.store.data_dir) / LOCKS_DIR
    return InstrumentClaim(folder / f"driver-{safe}.lock", folder / f"driver-{safe}.json", name)


def claim_instrument(config: StedloopConfig, owner: str, share: bool = False) -> InstrumentClaim:
    """Hold the configured driver for this process, or raise ``InstrumentBusy``.

    With ``share`` the claim is not taken (and nothing is refused); the returned claim then
    holds nothing, and releasing it is harmless."""
    claim = instrument_claim(config)
    if not share:
        try:
            claim.acquire(owner)
        except OSError as exc:  # an unwritable data folder: say which
            raise StedloopError(
                f"cannot create the instrument lock in {claim.lock_path.parent}: {exc.strerror}"
            ) from None
    return claim


def open_driver(
    config: StedloopConfig,
    on_fault: WorkerFaultCallback | None = None,
    claim: InstrumentClaim | None = None,
) -> Driver:
    """Build (not connect) the configured driver from the site configuration: in a worker
    process when ``driver.in_worker``, else in this process. A worker inherits ``claim``'s
    lock, so the instrument stays claimed until the worker, too, has exited."""
    if config.driver.in_worker:
        from stedloop.worker import create_worker_driver

        fds = claim.inheritable_fds() if claim is not None else ()
        return create_worker_driver(config, on_fault=on_fault, inherit_fds=fds)
    from stedloop.drivers import create_driver

    return create_driver(config)
