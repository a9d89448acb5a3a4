"""What a session's ledger says, replayed: frames, their outcome, state, best point.

Everything here is derived from the events alone (the ledger is the truth), so a crashed
session, a running one and a finished one are read the same way. Rows are read as the
typed events the session emitted (``stedloop.events``), whatever schema version wrote them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stedloop import events as ev
from stedloop.errors import DataError
from stedloop.store import ledger as L
from stedloop.store.ledger import Event


@dataclass
class FrameRecord:
    """One frame number of a session, as far as the ledger got with it."""

    frame: int
    params: dict[str, float]
    source: str = ""
    regions: list[dict[str, Any]] = field(default_factory=list)  # one per attempt
    errors: list[ev.Error] = field(default_factory=list)
    acquired: ev.Acquired | None = None
    outcome: ev.FrameOutcome | None = None  # its told or failed event
    values: dict[str, float | None] = field(default_factory=dict)
    objective_errors: dict[str, str] = field(default_factory=dict)
    combined: float | None = None
    status: str = "proposed"  # proposed | acquired | scored | told | failed
    #: When the ledger recorded the frame's outcome (told or failed), Unix seconds.
    recorded_at_s: float | None = None

    @property
    def done(self) -> bool:
        """The frame has a final outcome (its score is told, or it is recorded as failed)."""
        return self.status in ("told", "failed")

    @property
    def tiff(self) -> str | None:
        return self.acquired.tiff if self.acquired else None


@dataclass
class SessionHistory:
    created: dict[str, Any]
    frames: dict[int, FrameRecord]
    state: str  # running-or-interrupted ("open"), paused, stopped, finished
    stop_reason: str | None
    last_seq: int
    created_at_s: float
    updated_at_s: float
    #: The events in ledger order, typed; ``opened`` events start the runs.
    events: list[ev.SessionEvent] = field(default_factory=list)

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> SessionHistory:
        """Replay ``events``; ``DataError`` naming the first event whose payload is malformed
        (a ledger edited or damaged by hand), never a ``KeyError`` or ``TypeError``."""
        created: dict[str, Any] | None = None
        frames: dict[int, FrameRecord] = {}
        typed: list[ev.SessionEvent] = []
        state, reason, last_seq, t0, t1 = "open", None, 0, 0.0, 0.0
        for row in events:
            last_seq, t1 = row.seq, row.time_s
            try:
                _check_payload(row)
                event = ev.from_ledger(row.kind, row.frame, row.payload)
                if isinstance(event, ev.Created):
                    created, t0 = row.payload, row.time_s
                elif isinstance(event, ev.Proposed):
                    frames[event.frame] = FrameRecord(event.frame, dict(event.params), event.source)
                elif event.frame_no is not None and event.frame_no in frames:
                    _apply_frame_event(frames[event.frame_no], event)
                    if isinstance(event, (ev.Told, ev.Failed)):
                        frames[event.frame_no].recorded_at_s = row.time_s
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                why = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                raise DataError(f"event {row.seq} ({row.kind}) is malformed: {why}") from None
            typed.append(event)
            if isinstance(event, (ev.Opened, ev.Resumed)):
                state, reason = "open", None
            elif isinstance(event, ev.Paused):
                state = "paused"
            elif isinstance(event, ev.Ended):
                state, reason = event.kind, event.reason
        if created is None:
            raise DataError("it has no 'created' event (not a complete session)")
        return cls(created, frames, state, reason, last_seq, t0, t1, typed)

    @property
    def frames_done(self) -> int:
        """Frames with a final outcome (told or failed), over every run of the session."""
        return sum(1 for f in self.frames.values() if f.done)

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

    @property
    def warm_start(self) -> ev.WarmStarted | None:
        """The session's ``warm_start`` event (what it took from earlier sessions), if any."""
        return next((e for e in self.events if isinstance(e, ev.WarmStarted)), None)

    def prior_origin(self, frame_no: int) -> str | None:
        """Where the setting of a ``prior`` warm-up frame came from: ``SESSION#FRAME`` (the
        warm start's points are the first warm-up frames, in order)."""
        record, warm = self.frames.get(frame_no), self.warm_start
        if record is None or record.source != "prior" or warm is None:
            return None
        if frame_no >= len(warm.prior_points):
            return None
        point = warm.prior_points[frame_no]
        return f"{point.get('session')}#{point.get('frame')}"

    def used_regions(self) -> list[dict[str, Any]]:
        return [r for f in self.frames.values() for r in f.regions]

    @property
    def interrupted(self) -> bool:
        """No terminal event: the session crashed, or is running in another process."""
        return self.state not in L.TERMINAL


def _check_payload(event: Event) -> None:
    """Raise ``_Malformed`` when a payload lacks what the code reading it relies on."""
    p = event.payload
    if event.kind == L.CREATED:
        _expect(isinstance(p.get("seed"), int) and not isinstance(p["seed"], bool), "seed")
        objectives = p.get("objectives", [])
        _expect(isinstance(objectives, list), "objectives")
        for o in objectives:
            _expect(isinstance(o, dict), "objectives")
            for key in ("name", "unit", "direction"):
                _expect(isinstance(o.get(key), str), f"objectives[].{key}")
        _expect(p.get("name") is None or isinstance(p["name"], str), "name")
        _expect(isinstance(p.get("driver") or {}, dict), "driver")
        _expect(isinstance(p.get("config") or {}, dict), "config")
    elif event.kind == L.PROPOSED:
        _expect(isinstance(p.get("params"), dict), "params")
        _expect(all(_is_number(v) for v in p["params"].values()), "params")
    elif event.kind == L.ACQUIRING:
        region = p.get("region")
        _expect(
            isinstance(region, dict) and all(_is_number(region.get(k)) for k in REGION_KEYS),
            "region",
        )
    elif event.kind == L.ACQUIRED:
        _expect(p.get("tiff") is None or isinstance(p["tiff"], str), "tiff")
        _expect(p.get("region") is None or isinstance(p["region"], dict), "region")
        _expect(isinstance(p.get("params_applied", {}), dict), "params_applied")
    elif event.kind == L.SCORED:
        values = p.get("values", {})
        _expect(isinstance(values, dict), "values")
        _expect(all(v is None or _is_number(v) for v in values.values()), "values")
        _expect(isinstance(p.get("errors", {}), dict), "errors")
        _expect(p.get("combined") is None or _is_number(p["combined"]), "combined")
    elif event.kind in L.TERMINAL:
        _expect(p.get("reason") is None or isinstance(p["reason"], str), "reason")


REGION_KEYS = ("x_um", "y_um", "width_px", "height_px")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Malformed(ValueError):
    pass


def _expect(ok: bool, key: str) -> None:
    if not ok:
        raise _Malformed(f"'{key}' is missing or of the wrong type")


def _apply_frame_event(record: FrameRecord, event: ev.SessionEvent) -> None:
    if isinstance(event, ev.Acquiring):
        record.regions.append(event.region)
    elif isinstance(event, ev.Error):
        record.errors.append(event)
    elif isinstance(event, ev.Acquired):
        record.acquired, record.status = event, "acquired"
    elif isinstance(event, ev.Scored):
        record.values = dict(event.values)
        record.objective_errors = dict(event.errors)
        record.combined = event.combined
        record.status = "scored"
    elif isinstance(event, ev.Told):
        record.outcome, record.status = event, "told"
    elif isinstance(event, ev.Failed):
        record.outcome, record.status = event, "failed"
        record.objective_errors.setdefault("_reason", event.reason)
