"""The events of an optimisation session: one typed vocabulary for the ledger, the wire and
every reader.

The session (``stedloop.session.runner``) emits each event once. Its subscribers are the
session's ledger (first, synchronous, durable: ``Ledger.record``) and then the listener the
caller passed (the daemon's event bus, ``stedloop optimize``'s progress lines). The ledger
history (``stedloop.store.history``) replays the same classes, and clients rebuild them from
the wire (``from_wire``), so the CLI, the daemon and the live view read attributes, never
dictionary keys.

Events are frozen pydantic models: ``to_data()`` is plain JSON-able data that crosses a
process or network boundary, ``from_data()`` turns it back into the same class. Fields carry
their unit in their name (``_ms``, ``_s``, ``_um``, ``_nm``). Frames are numbered from 0
everywhere (ledger, files ``frames/0000.ome.tif``, CSV, plots, the CLI and the wire).

Rows written before this module (``EVENT_SCHEMA_VERSION`` 1) lack some fields; they are
read with the defaults below, and renamed keys (``score`` of ``told``, ``frames`` of
``stopped``/``finished``) are mapped. Adding a field with a default keeps the version;
renaming or removing one bumps it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

#: 1: untyped payloads (before this module); 2: these classes (``told`` carries the outcome).
EVENT_SCHEMA_VERSION = 2

#: Bus topics (the first ZeroMQ frame of a published event).
SESSION_TOPIC, FRAME_TOPIC, LOG_TOPIC = "session", "frame", "log"
TOPICS = (SESSION_TOPIC, FRAME_TOPIC, LOG_TOPIC)
#: How a run of a session ends.
END_STATES = ("finished", "stopped", "failed")


class SessionEvent(BaseModel):
    """Base of every event. ``kind`` names the class (the ledger's ``kind`` column)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: str
    #: Written to the ledger (False: the event bus only).
    recorded: ClassVar[bool] = True
    #: Published on the event bus under this topic (None: the ledger only).
    topic: ClassVar[str | None] = None

    @property
    def frame_no(self) -> int | None:
        """The frame the event belongs to (the ledger's ``frame`` column)."""
        return None

    def to_data(self) -> dict[str, Any]:
        """Plain JSON-able data, ``kind`` included; ``from_data`` gives the event back."""
        return self.model_dump(mode="json")

    def ledger_payload(self) -> dict[str, Any]:
        """The ledger row's payload: everything but ``kind`` and ``frame`` (own columns)."""
        data = self.to_data()
        data.pop("kind")
        data.pop("frame", None)
        return data

    def to_wire(self) -> dict[str, Any]:
        """The ``data`` of a published event (protocol v1 keys kept, see docs/protocol.md)."""
        return self.to_data()


class _Progress(BaseModel):
    """Where the session stands: counted by the session, carried by its events."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # as SessionEvent's: mixed in

    #: Frames with a final outcome (told or failed), over all runs of the session.
    frames_done: int | None = None
    best_score: float | None = None
    best_params: dict[str, float] | None = None


@runtime_checkable
class CarriesProgress(Protocol):
    """An event that carries where the session stands (the classes that mix in ``Progress``);
    for ``isinstance`` on an event of any class."""

    @property
    def frames_done(self) -> int | None: ...
    @property
    def best_score(self) -> float | None: ...
    @property
    def best_params(self) -> dict[str, float] | None: ...


class _FrameEvent(SessionEvent):
    frame: int  # from 0

    @property
    def frame_no(self) -> int | None:
        return self.frame


# -- the session --------------------------------------------------------------------------
class Created(SessionEvent):
    """A session was created: the snapshot a resume is checked against."""

    kind: Literal["created"] = "created"
    id: str | None = None
    name: str | None = None
    seed: int
    config: dict[str, Any] = Field(default_factory=dict)
    param_space: dict[str, Any] = Field(default_factory=dict)
    safety: dict[str, Any] = Field(default_factory=dict)
    objectives: list[dict[str, Any]] = Field(default_factory=list)  # name, unit, direction
    scalarisation: Any = None
    driver: dict[str, Any] = Field(default_factory=dict)
    stedloop_version: str | None = None


class Opened(_Progress, SessionEvent):
    """A run of the session began (the first run, or a resume with its replayed progress)."""

    kind: Literal["opened"] = "opened"
    topic: ClassVar[str | None] = SESSION_TOPIC
    resumed: bool = False
    budget_frames: int | None = None
    target_score: float | None = None
    config_changes: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # e.g. caps changed since creation
    config: dict[str, Any] = Field(default_factory=dict)
    #: The ``EVENT_SCHEMA_VERSION`` of the rows this run writes (absent: 1).
    event_schema: int = 1

    @property
    def state(self) -> str:
        return "resumed" if self.resumed else "started"

    def to_wire(self) -> dict[str, Any]:
        data = self.to_data()
        data.pop("config")  # bulky; in the ledger and session.get
        return {**data, "state": self.state, "frames": self.frames_done}


class Paused(_Progress, SessionEvent):
    """The run paused at a frame boundary (lasers in the safe state)."""

    kind: Literal["paused"] = "paused"
    topic: ClassVar[str | None] = SESSION_TOPIC
    state: Literal["paused"] = "paused"

    def to_wire(self) -> dict[str, Any]:
        return {**self.to_data(), "frames": self.frames_done}


class Resumed(_Progress, SessionEvent):
    """The run continues after a pause."""

    kind: Literal["resumed"] = "resumed"
    topic: ClassVar[str | None] = SESSION_TOPIC
    state: Literal["resumed"] = "resumed"

    def to_wire(self) -> dict[str, Any]:
        return {**self.to_data(), "frames": self.frames_done}


class _Ended(_Progress, SessionEvent):
    topic: ClassVar[str | None] = SESSION_TOPIC
    state: str  # finished | stopped | failed
    reason: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _v1_frames(cls, data: Any) -> Any:
        if isinstance(data, dict) and "frames_done" not in data and "frames" in data:
            data = {**data, "frames_done": data["frames"]}
        return data

    def to_wire(self) -> dict[str, Any]:
        return {**self.to_data(), "frames": self.frames_done}


class Finished(_Ended):
    """The run ended for good: budget spent, target reached, sample used up (terminal)."""

    kind: Literal["finished"] = "finished"
    state: str = "finished"


class Stopped(_Ended):
    """The run ended early (``state`` stopped: on request; failed: a fault) (terminal)."""

    kind: Literal["stopped"] = "stopped"
    state: str = "stopped"


class WarmStarted(SessionEvent):
    """The session starts from what earlier sessions learned (``stedloop.session.warm_start``):
    recorded once, after ``created``; a resume rebuilds the optimizer from it alone."""

    kind: Literal["warm_start"] = "warm_start"
    #: The earlier sessions read, most recent first; ``auto``: chosen by ``--warm-start auto``.
    sessions: list[str] = Field(default_factory=list)
    auto: bool = False
    structure: str | None = None
    #: Scored frames read from them (what the prior was fitted on).
    observations: int = 0
    #: The settings of the first warm-up frames, in order: ``session``, ``frame`` (where the
    #: setting was imaged before), ``params`` (as applied then), ``score`` (its combined score).
    prior_points: list[dict[str, Any]] = Field(default_factory=list)


# -- one frame ----------------------------------------------------------------------------
class Proposed(_FrameEvent):
    kind: Literal["proposed"] = "proposed"
    params: dict[str, float]
    source: str = ""  # prior | design | random | model | exploit
    decision_ms: float | None = None


class Acquiring(_FrameEvent):
    """One attempt at the frame, on a fresh region."""

    kind: Literal["acquiring"] = "acquiring"
    attempt: int = 1
    region: dict[str, Any]  # x_um, y_um, width_px, height_px


class Acquired(_FrameEvent):
    kind: Literal["acquired"] = "acquired"
    tiff: str | None = None  # relative to the session folder; None when the write failed
    params_applied: dict[str, float] = Field(default_factory=dict)
    region: dict[str, Any] | None = None
    pixel_size_nm: float | None = None
    started_at_s: float | None = None
    finished_at_s: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Scored(_FrameEvent):
    """The objectives' values, recorded before the optimizer is told (a crash after this
    event is finished on resume from these values, never by acquiring again)."""

    kind: Literal["scored"] = "scored"
    values: dict[str, float | None] = Field(default_factory=dict)  # None: it failed
    errors: dict[str, str] = Field(default_factory=dict)
    combined: float | None = None


class _Outcome(_Progress, _FrameEvent):
    """A frame's final outcome: the one event per frame that listeners see (topic frame)."""

    topic: ClassVar[str | None] = FRAME_TOPIC
    params: dict[str, float] = Field(default_factory=dict)  # as proposed
    values: dict[str, float | None] = Field(default_factory=dict)
    combined: float | None = None
    tiff: str | None = None  # absolute path when written (the ledger's is in `acquired`)
    budget_frames: int | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)  # acquire_ms, write_ms, score_ms
    from_ledger: bool = False  # recorded by a resume from the frame's `scored` event

    @property
    def status(self) -> str:
        return self.kind

    def to_wire(self) -> dict[str, Any]:
        return {**self.to_data(), "status": self.status}


class Told(_Outcome):
    """The frame's combined score was told to the optimizer."""

    kind: Literal["told"] = "told"
    combined: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _v1_score(cls, data: Any) -> Any:
        if isinstance(data, dict) and "combined" not in data and "score" in data:
            data = {**data, "combined": data["score"]}
        return data


class Failed(_Outcome):
    """The frame is recorded as failed (never told as a number)."""

    kind: Literal["failed"] = "failed"
    reason: str = ""


class Error(SessionEvent):
    """A fault the session recorded and handled (a driver error, a frame write)."""

    kind: Literal["error"] = "error"
    frame: int | None = None
    stage: str = ""  # acquire | write
    error: str = ""
    attempt: int | None = None
    aborted: bool = False
    refused: bool = False  # a cap or range refusal: not retried
    will_retry: bool = False
    kept_as: str | None = None  # a file set aside, relative to the session folder

    @property
    def frame_no(self) -> int | None:
        return self.frame


# -- overview-guided regions (issue 19, item 2) ---------------------------------------------
class OverviewTaken(SessionEvent):
    """A confocal overview was taken and the next regions were picked from it
    (``stedloop.session.overview_regions``); ``regions`` are imaged in this order."""

    kind: Literal["overview"] = "overview"
    # Ledger only: protocol v1 clients read every `session` event as a state change; the
    # `log` line that goes with it says what was picked.
    overview: int  # from 0, per session
    before_frame: int | None = None  # the frame whose region it was taken for
    area: dict[str, float] = Field(default_factory=dict)  # x_um, y_um, width_um, height_um
    pixel_size_nm: float | None = None
    params_applied: dict[str, float] = Field(default_factory=dict)  # depletion 0
    light_dose_per_pixel_uj: float | None = None  # counted against the caps like a frame's
    tiff: str | None = None  # relative to the session folder; None when the write failed
    #: Picked regions: x_um, y_um, width_px, height_px, foreground_fraction, structure_content.
    regions: list[dict[str, float]] = Field(default_factory=list)
    candidates: int = 0  # fields the overview was cut into
    in_band: int = 0  # of which within both bands
    threshold_counts: float | None = None  # foreground threshold on the smoothed overview


# -- messages -----------------------------------------------------------------------------
class Log(SessionEvent):
    """A message for people (not recorded: the ledger has the facts)."""

    kind: Literal["log"] = "log"
    recorded: ClassVar[bool] = False
    topic: ClassVar[str | None] = LOG_TOPIC
    level: str = "info"  # info | warning | error
    message: str
    traceback: str | None = None
    fault: str | None = None  # a driver-worker fault: worker_hung | worker_crashed


Event = Annotated[
    Created
    | Opened
    | Paused
    | Resumed
    | Finished
    | Stopped
    | WarmStarted
    | Proposed
    | Acquiring
    | Acquired
    | Scored
    | Told
    | Failed
    | Error
    | OverviewTaken
    | Log,
    Field(discriminator="kind"),
]
EVENT_CLASSES: tuple[type[SessionEvent], ...] = (
    Created,
    Opened,
    Paused,
    Resumed,
    Finished,
    Stopped,
    WarmStarted,
    Proposed,
    Acquiring,
    Acquired,
    Scored,
    Told,
    Failed,
    Error,
    OverviewTaken,
    Log,
)
BY_KIND: dict[str, type[SessionEvent]] = {c.model_fields["kind"].default: c for c in EVENT_CLASSES}
#: Ledger kinds (every event class but the bus-only ones).
LEDGER_KINDS = frozenset(k for k, c in BY_KIND.items() if c.recorded)
TERMINAL_KINDS = frozenset({"stopped", "finished"})
FrameOutcome = _Outcome
Ended = _Ended
Progress = _Progress

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)


def from_data(data: dict[str, Any]) -> SessionEvent:
    """The event ``to_data`` (or ``to_wire``) made; ``ValueError`` naming what is wrong."""
    try:
        event = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(problems) from None
    assert isinstance(event, SessionEvent)
    return event


def from_ledger(kind: str, frame: int | None, payload: dict[str, Any]) -> SessionEvent:
    """A ledger row as its event (rows of every schema version); ``ValueError`` if malformed."""
    data = {**payload, "kind": kind}
    if frame is not None:
        data["frame"] = frame
    return from_data(data)


def from_wire(topic: str | None, data: object) -> SessionEvent | None:
    """A published event's ``data`` as its event; None for what this version does not know
    (a newer daemon's kind, or an older one's data without ``kind``)."""
    if not isinstance(data, dict):
        return None
    typed = data if "kind" in data else _kind_of_v1(topic, data)  # v1: a daemon before 2
    if typed is None:
        return None
    try:
        return from_data(typed)
    except ValueError:
        return None


def _kind_of_v1(topic: str | None, data: dict[str, Any]) -> dict[str, Any] | None:
    state = data.get("state")
    if topic == LOG_TOPIC:
        return {**data, "kind": "log"}
    if topic == FRAME_TOPIC and isinstance(data.get("frame"), int):
        told = data.get("combined") is not None
        return {**data, "kind": data.get("status") or ("told" if told else "failed")}
    if topic == SESSION_TOPIC:
        if state in ("started", "resumed") and "reason" not in data and "best_score" not in data:
            kind = "opened" if state == "started" else "resumed"
            return {**data, "kind": kind, "frames_done": data.get("frames")}
        if state == "paused":
            return {**data, "kind": "paused", "frames_done": data.get("frames")}
        if state in END_STATES:
            kind = "finished" if state == "finished" else "stopped"
            return {**data, "kind": kind, "reason": data.get("reason") or data.get("error")}
    return None


def field_table() -> list[tuple[str, str | None, list[str]]]:
    """(kind, topic, field names) of every event class: what docs/session.md lists."""
    rows = []
    for kind, cls in BY_KIND.items():
        fields = [name for name in cls.model_fields if name != "kind"]
        rows.append((kind, cls.topic, fields))
    return rows
