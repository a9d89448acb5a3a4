"""Progress of a long command on stderr: a rich bar with an estimate of the time left on a
terminal; when stderr is a file or a pipe, a plain line at each tenth of the way but at most
one every ``plain_interval_s`` (logs and tests stay readable, a quick command stays silent);
nothing with ``--json`` (``quiet``).

stdout stays the command's own output (a report, JSON), so the progress never mixes into it.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import IO, Any

#: A plain-line progress says where it is after each such share of the work ...
PLAIN_STEP = 0.1
#: ... but not more often than this.
PLAIN_INTERVAL_S = 5.0


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class CommandProgress:
    """``with CommandProgress("scoring", total, "images") as bar: bar.update(done)``.

    ``phase`` starts another stage with its own total (e.g. scoring, then the bootstrap).
    """

    def __init__(
        self,
        label: str,
        total: int,
        unit: str,
        *,
        quiet: bool = False,
        stream: IO[str] | None = None,
        plain_interval_s: float = PLAIN_INTERVAL_S,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.plain_interval_s = plain_interval_s
        self.rich = not quiet and self.stream.isatty()
        self._bar: Any = None
        self._task: Any = None
        self._set(label, total, unit)

    def _set(self, label: str, total: int, unit: str) -> None:
        self.label, self.total, self.unit = label, max(0, int(total)), unit
        self.done = 0
        self._started = self._last_line = time.monotonic()
        self._next_plain = PLAIN_STEP

    def __enter__(self) -> CommandProgress:
        if self.rich:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, unit=self.unit)
        return self

    def phase(self, label: str, total: int, unit: str) -> None:
        """Start the next stage of the command (the bar restarts at 0)."""
        if self.quiet:
            return
        self._set(label, total, unit)
        if self._bar is not None:
            self._bar.refresh()  # the finished stage shows complete before it goes
            self._bar.remove_task(self._task)
            self._task = self._bar.add_task(label, total=self.total, unit=unit)

    def update(self, done: int) -> None:
        """``done`` of ``total`` are finished."""
        if self.quiet:
            return
        self.done = min(int(done), self.total) if self.total else int(done)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        if not self.total:
            return
        share = self.done / self.total
        if share + 1e-12 < self._next_plain and self.done < self.total:
            return
        while self._next_plain <= share + 1e-12:
            self._next_plain += PLAIN_STEP
        now = time.monotonic()
        if now - self._last_line < self.plain_interval_s:
            return
        self._last_line = now
        elapsed = now - self._started
        left = elapsed / share * (1 - share) if share > 0 else 0.0
        estimate = f", about {_duration(left)} left" if self.done < self.total else ""
        print(
            f"{self.label}: {self.done}/{self.total} {self.unit} ({share:.0%}), "
            f"{_duration(elapsed)}{estimate}",
            file=self.stream,
            flush=True,
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
