"""A driver that logs its calls to a file, for tests of what a worker does when it exits.

``install_spy_plugin`` registers it as the ``spy`` driver (a dist-info folder put on
PYTHONPATH), so a worker process loads it like any plugin; the log outlives the worker, so a
test reads it afterwards. Each line: wall-clock time (s), the worker's pid, the event.

Its frame lasts ``acquire_s``; it checks for an abort every 10 ms, unless ``honour_abort`` is
false (a vendor call that hangs and ignores aborts). With ``hold_gil_s`` a frame first holds
its interpreter's GIL that long in one C call (a vendor library that never releases it, or
heavy compute): nothing else in that interpreter runs meanwhile.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from stedloop.driver import AcquireRequest, BaseDriver, DriverDescription
from stedloop.errors import AcquisitionAborted, DriverDisconnected, DriverError
from stedloop.frame import Frame, Region

SPY_FIELD = Region(0.0, 0.0, 16, 16)


class SpyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    log_path: str
    acquire_s: float = 8.0
    honour_abort: bool = True
    abort_raises: bool = False  # request_abort fails (e.g. the connection just dropped)
    hold_gil_s: float = 0.0
    #: connect raises: "disconnected" (DriverDisconnected, a user-facing error) or "bug"
    connect_error: str = ""


class SpyDriver(BaseDriver):
    API_VERSION = "2.0"
    Options = SpyOptions
    options: SpyOptions

    def _log(self, event: str) -> None:
        with open(self.options.log_path, "a", encoding="utf-8") as handle:
            handle.write(f"{time.time():.6f} {os.getpid()} {event}\n")

    def connect(self) -> None:
        self._log("connect")
        if self.options.connect_error == "disconnected":
            raise DriverDisconnected("spy: no instrument answers at its address")
        if self.options.connect_error == "bug":
            raise RuntimeError("spy: a bug in the plugin")

    def describe(self) -> DriverDescription:
        ranges = {"dwell_time_us": (0.1, 1000.0), "excitation_uw": (0.0, 100.0)}
        ranges["depletion_mw"] = (0.0, 500.0)
        return DriverDescription("spy", 50.0, (16, 16), None, ranges)

    def _acquire(self, request: AcquireRequest) -> Frame:
        params, region = request.params, request.region
        self._log("acquire_start")
        if self.options.hold_gil_s > 0:
            _hold_gil(self.options.hold_gil_s)
            self._log("gil_released")
        started = time.time()
        end = time.monotonic() + self.options.acquire_s
        while time.monotonic() < end:
            if self.options.honour_abort and self.abort_requested:
                self._log("acquire_aborted")
                raise AcquisitionAborted("spy: frame aborted")
            time.sleep(0.01)
        self._log("acquire_end")
        image = np.zeros((16, 16), dtype=np.uint16)
        return Frame(image, image, image, params, region, 50.0, started, time.time())

    def request_abort(self) -> None:
        self._log("request_abort")
        if self.options.abort_raises:
            raise DriverError("spy: abort failed")
        super().request_abort()

    def safe_state(self) -> None:
        self._log("safe_state")

    def close(self) -> None:
        self._log("close")


def _hold_gil(seconds: float) -> None:
    """Hold the GIL for about ``seconds``: one builtin ``sum`` over a range never returns to
    the interpreter loop, so no other thread of this process runs until it is done."""
    n = 200_000
    started = time.perf_counter()
    sum(range(n))
    per_item_s = max((time.perf_counter() - started) / n, 1e-9)
    sum(range(int(seconds / per_item_s)))


@dataclass(frozen=True)
class SpyEvent:
    at_s: float
    pid: int
    name: str


def read_spy_log(path: Path) -> list[SpyEvent]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        at_s, pid, name = line.split()
        events.append(SpyEvent(float(at_s), int(pid), name))
    return events


def install_spy_plugin(root: Path) -> str:
    """Register the spy driver under ``root``; returns the PYTHONPATH a worker needs."""
    info = root / "stedloop_spy-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stedloop-spy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[stedloop.drivers]\nspy = tests.worker_spy:SpyDriver\n")
    repo = Path(__file__).resolve().parent.parent
    return os.pathsep.join([str(root), str(repo)])
