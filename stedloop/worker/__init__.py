"""Run the configured driver in its own worker process, behind the same Driver interface.

``create_worker_driver(config, on_fault)`` gives a ``WorkerDriver``; see docs/worker.md.
Kept import-light: the worker process itself imports this package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stedloop.config.schema import StedloopConfig
    from stedloop.worker.client import WorkerDriver

__all__ = ["WorkerDriver", "create_worker_driver"]


def create_worker_driver(
    config: StedloopConfig,
    on_fault: Callable[[str, dict[str, Any]], None] | None = None,
    inherit_fds: tuple[int, ...] = (),
) -> WorkerDriver:
    """A Driver that runs ``config.driver`` in a child process (nothing is started yet).

    ``on_fault(kind, details)`` is called from the watchdog thread with kind
    ``"worker_hung"``, ``"worker_crashed"`` or ``"worker_restart_failed"``; keep it quick.
    """
    from stedloop.worker.client import WorkerDriver

    return WorkerDriver.from_config(config, on_fault=on_fault, inherit_fds=inherit_fds)


def __getattr__(name: str) -> Any:
    if name == "WorkerDriver":
        from stedloop.worker.client import WorkerDriver

        return WorkerDriver
    raise AttributeError(name)
