"""Opening the configured microscope: one stedloop process drives it at a time.

``open_driver`` is the one place that opens the configured driver for a session, for the
daemon (``stedloop serve``) and for ``stedloop optimize`` alike: it claims the instrument,
builds the driver in a worker process or in this one (``driver.in_worker``), connects it and
puts it in its safe state; the ``OpenDriver`` it returns undoes all of that in ``close``.

The claim (``claim_instrument``) is an exclusive lock on the instrument: a lock file per
driver name in the data folder, held for as long as the process may touch the driver. A
second process that would set the same lasers is refused with the first one's description,
unless the user says the driver may be shared (``--share-driver``; e.g. two independent
simulators).

The operating system releases the lock when its process dies, even by ``kill -9``, so a
crashed daemon never blocks the next one.
"""

from __future__ import annotations

import contextlib
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
        #: False for a claim inherited from the process that took it (``adopt``): releasing
        #: it only closes this process's descriptor; the lock stays the taker's.
        self._owned = True

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

    def adopt(self, fd: int) -> None:
        """Hold the claim through ``fd``, a descriptor of the lock file inherited from the
        process that acquired it (POSIX: the lock belongs to the open file, so it lasts while
        any process holding that file is alive)."""
        self._fd = fd
        self._owned = False

    def inheritable_fds(self) -> tuple[int, ...]:
        """The lock's descriptor, for a child process that must hold the claim as long as it
        lives (POSIX: a lock belongs to the open file, shared with children that inherit it)."""
        return (self._fd,) if self._fd is not None and os.name != "nt" else ()

    def release(self) -> None:
        if self._fd is None:
            return
        if not self._owned:  # the taker still holds the lock and its description
            os.close(self._fd)
            self._fd = None
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


class OpenDriver:
    """The configured driver, connected and claimed; ``close`` (or leaving a ``with``) puts
    it in its safe state, closes it and releases the claim, each even if the one before
    failed (the first failure is raised afterwards)."""

    def __init__(self, driver: Driver, claim: InstrumentClaim) -> None:
        self.driver = driver
        self.claim = claim
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.driver.safe_state()
        finally:
            try:
                self.driver.close()
            finally:
                self.claim.release()

    def __enter__(self) -> OpenDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_driver(
    config: StedloopConfig,
    owner: str,
    *,
    share: bool = False,
    on_fault: WorkerFaultCallback | None = None,
    claim: InstrumentClaim | None = None,
) -> OpenDriver:
    """Claim the instrument for ``owner`` (``InstrumentBusy`` if another process holds it,
    unless ``share``), build the configured driver, connect it and command its safe state
    before anything else. A driver in a worker reports faults to ``on_fault``; the worker
    inherits the claim's lock, so the instrument stays claimed until it, too, has exited.
    ``claim``: one this process already holds (the daemon's session engine adopts the
    daemon's); ``owner`` and ``share`` are then not used."""
    if claim is None:
        claim = claim_instrument(config, owner, share=share)
    try:
        driver = _build_driver(config, on_fault, claim)
    except BaseException:
        claim.release()
        raise
    opened = OpenDriver(driver, claim)
    try:
        driver.connect()
        driver.safe_state()  # first thing after connecting: lasers off
    except BaseException:
        with contextlib.suppress(Exception):  # the connect error is the one to report
            opened.close()
        raise
    return opened


def _build_driver(
    config: StedloopConfig, on_fault: WorkerFaultCallback | None, claim: InstrumentClaim
) -> Driver:
    """The configured driver, not yet connected: in a worker process when
    ``driver.in_worker``, else in this process."""
    if config.driver.in_worker:
        from stedloop.worker import create_worker_driver

        return create_worker_driver(config, on_fault=on_fault, inherit_fds=claim.inheritable_fds())
    from stedloop.drivers import create_driver

    return create_driver(config)
