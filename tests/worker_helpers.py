"""Shared set-up for the driver-worker tests: fast heartbeats, the simulator, process checks."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from stedloop.config.schema import WorkerSection
from stedloop.frame import Region
from stedloop.params import ImagingParams
from stedloop.worker.client import WorkerDriver

FIELD = Region(0.0, 0.0, 224, 224)
PARAMS = ImagingParams(dwell_time_us=10.0, excitation_uw=5.0, depletion_mw=100.0)


def fast_settings(**changes: Any) -> WorkerSection:
    """Short heartbeats and grace so fault tests finish in seconds (still > start-up jitter)."""
    values: dict[str, Any] = {
        "python_executable": sys.executable,
        "heartbeat_interval_s": 0.1,
        "heartbeat_timeout_s": 2.0,
        "abort_grace_period_s": 0.5,
        "standby": False,
        "restart_backoff_s": 0.05,
        **changes,
    }
    return WorkerSection(**values)


def simulator_worker(
    options: dict[str, Any] | None = None,
    on_fault: Callable[[str, dict[str, Any]], None] | None = None,
    **settings: Any,
) -> WorkerDriver:
    opts = {"seed": 3, "sample_fields": 2, **(options or {})}
    return WorkerDriver("simulator", opts, settings=fast_settings(**settings), on_fault=on_fault)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # Still listed: a zombie (exited, not yet reaped by a container's init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)
