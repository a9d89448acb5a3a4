"""What a session's ledger says, replayed: frames, their outcome, state, best point.

Everything here is derived from the events alone (the ledger is the truth), so a crashed
session, a running one and a finished one are read the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stedloop.store import ledger as L
from stedloop.store.ledger import Event


@dataclass
class FrameRecord:
    """One frame number of a session, as far as the ledger got with it."""

    frame: int
    params: dict[str, float]
    source: str = ""
    regions: list[dict[str, Any]] = field(default_factory=list)  # one per attempt
    errors: list[dict[str, Any]] = field(default_factory=list)
    acquired: dict[str, Any] | None = None  # payload of the acquired event
    values: dict[str, float | None] = field(default_factory=dict)
    objective_errors: dict[str, str] = field(default_factory=dict)
    combined: float | None = None
    status: str = "proposed"  # proposed | acquired | scored | told | failed

    @property
    def done(self) -> bool:
        """The frame has a final outcome (its score is told, or it is recorded as failed)."""
        return self.status in ("told", "failed")

    @property
    def tiff(self) -> str | None:
        return self.acquired.get("tiff") if self.acquired else None


@dataclass
class SessionHistory:
    created: dict[str, Any]
    frames: dict[int, FrameRecord]
    state: str  # running-or-interrupted ("open"), paused, stopped, finished
    stop_reason: str | None
    last_seq: int
    created_at_s: float
    updated_at_s: float

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> SessionHistory:
        created: dict[str, Any] = {}
        frames: dict[int, FrameRecord] = {}
        state, reason, last_seq, t0, t1 = "open", None, 0, 0.0, 0.0
        for event in events:
            last_seq, t1 = event.seq, event.time_s
            p = event.payload
            if event.kind == L.CREATED:
                created, t0 = p, event.time_s
            elif event.kind == L.PROPOSED and event.frame is not None:
                frames[event.frame] = FrameRecord(
                    event.frame, dict(p["params"]), p.get("source", "")
                )
            elif event.frame is not None and event.frame in frames:
                _apply_frame_event(frames[event.frame], event)
            if event.kind in (L.OPENED, L.RESUMED):
                state, reason = "open", None
            elif event.kind == L.PAUSED:
                state = "paused"
            elif event.kind in L.TERMINAL:
                state, reason = event.kind, p.get("reason")
        return cls(created, frames, state, reason, last_seq, t0, t1)

    def done_frames(self) -> list[FrameRecord]:
        return [self.frames[k] for k in sorted(self.frames) if self.frames[k].done]

    def told_frames(self) -> list[FrameRecord]:
        return [f for f in self.done_frames() if f.status == "told"]

    def in_flight(self) -> FrameRecord | None:
        """The frame proposed but not finished when the ledger stops (crash or stop)."""
        pending = [f for f in self.frames.values() if not f.done]
        return max(pending, key=lambda f: f.frame) if pending else None

    def best(self) -> FrameRecord | None:
        told = self.told_frames()
        return max(told, key=lambda f: f.combined or float("-inf")) if told else None

    def used_regions(self) -> list[dict[str, Any]]:
        return [r for f in self.frames.values() for r in f.regions]

    @property
    def interrupted(self) -> bool:
        """No terminal event: the session crashed, or is running in another process."""
        return self.state not in L.TERMINAL


def _apply_frame_event(record: FrameRecord, event: Event) -> None:
    p = event.payload
    if event.kind == L.ACQUIRING:
        record.regions.append(p["region"])
    elif event.kind == L.ERROR:
        record.errors.append(p)
    elif event.kind == L.ACQUIRED:
        record.acquired, record.status = p, "acquired"
    elif event.kind == L.SCORED:
        record.values = dict(p.get("values", {}))
        record.objective_errors = dict(p.get("errors", {}))
        record.combined = p.get("combined")
        record.status = "scored"
    elif event.kind == L.TOLD:
        record.status = "told"
    elif event.kind == L.FAILED:
        record.status = "failed"
        record.objective_errors.setdefault("_reason", p.get("reason", ""))
