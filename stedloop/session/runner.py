"""The optimisation session: ask -> acquire on a fresh region -> score -> record -> tell.

The same code runs in the daemon and in ``stedloop optimize``. Every step is one typed event
(``stedloop.events``), emitted once: the session's ledger records it (committed) before the
listener sees it and before the next step starts, and the optimizer is rebuilt from the
ledger on resume, so a crash loses at most the frame in flight. ``run`` never raises for
driver or objective faults it can record, and it always ends with ``driver.safe_state()``.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stedloop import __version__
from stedloop import events as ev
from stedloop.config import LoadedConfig
from stedloop.config.resume import recorded_space_beyond_caps
from stedloop.driver import (
    AcquireRequest,
    Driver,
    DriverDescription,
    OverviewDriver,
    OverviewRequest,
    RawOutput,
    takes_overviews,
)
from stedloop.errors import (
    AcquisitionAborted,
    ConfigError,
    DataError,
    ParameterRejected,
    SafetyCapExceeded,
    ScoringUnavailable,
    StedloopError,
    StorageError,
)
from stedloop.frame import Frame, Overview, Region
from stedloop.objectives import build_objectives
from stedloop.objectives.base import Objective, describe
from stedloop.objectives.scalarise import Scalariser
from stedloop.optimize import BayesianOptimizer, SearchSpace, resolve_score_transform
from stedloop.params import ImagingParams
from stedloop.quality.scorer_protocol import Scorer
from stedloop.session import warm_start
from stedloop.session.applied import told_params
from stedloop.session.control import SessionControl
from stedloop.session.overview_picker import Picks
from stedloop.session.overview_regions import OverviewRefused, OverviewRegions
from stedloop.session.regions import RegionTiler, SampleExhausted
from stedloop.store.frames import read_frame, remove_stale_temp_files, set_aside, write_frame
from stedloop.store.history import SessionHistory
from stedloop.store.lock import FolderLock
from stedloop.store.overviews import overview_path, write_overview
from stedloop.store.session_store import FRAMES_DIR, SessionInfo, SessionRecord, SessionStore

#: A listener of the session's events (after the ledger has recorded them).
EventCallback = Callable[[ev.SessionEvent], None]

#: Parts of the creation snapshot that must match for a resume (without --force). The safety
#: caps are not among them: today's site caps always apply, and a recorded space that no
#: longer fits inside them is refused on its own (``recorded_space_beyond_caps``).
COMPATIBILITY_KEYS = ("param_space", "objectives", "scalarisation")


@dataclass(frozen=True)
class SessionSummary:
    """How a run of a session ended."""

    id: str
    state: str  # finished | stopped | failed
    frames: int  # frames with a final outcome, over all runs of the session
    best_params: dict[str, float] | None
    best_score: float | None
    stop_reason: str
    folder: Path

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "frames": self.frames,
            "best_params": self.best_params,
            "best_score": self.best_score,
            "stop_reason": self.stop_reason,
            "folder": str(self.folder),
        }


@dataclass
class _Outcome:
    state: str  # the session state when the loop ends: finished | stopped | failed
    reason: str


class Session:
    """One optimisation session. Build it with ``start`` or ``resume``, then ``run`` it."""

    def __init__(
        self,
        record: SessionRecord,
        loaded: LoadedConfig,
        driver: Driver,
        objectives: list[Objective],
        scalariser: Scalariser,
        seed: int,
        description: DriverDescription,
        history: SessionHistory | None = None,
        config_changes: list[str] | None = None,
        notes: list[str] | None = None,
        warm: ev.WarmStarted | None = None,
    ) -> None:
        self.record = record
        self.loaded = loaded
        self.config = loaded.config
        self.driver = driver
        self.objectives = objectives
        self.scalariser = scalariser
        self.seed = seed
        self.description = description
        self.space = SearchSpace(self.config.params, self.config.safety)
        settings = resolve_score_transform(
            self.config.optimizer, self.config.objectives.scalarisation
        )
        #: What the session learns from earlier sessions (its ledger's ``warm_start`` event).
        self.warm_start = warm
        self.optimizer = BayesianOptimizer(
            self.space, settings, seed, prior_points=warm_start.prior_params(warm)
        )
        self._config_changes = config_changes or []
        self._notes = notes or []  # shown and recorded when the run opens
        # The frame in flight when the session stopped, and its TIFF if it was recorded.
        self._pending: tuple[int, ImagingParams, Path | None] | None = None
        # Outcomes replayed from `scored` events whose told/failed event the stop cut off;
        # written to the ledger when the run starts (under the session's lock).
        self._unrecorded: list[ev.FrameOutcome] = []
        self._next_frame = 0
        self._done = 0
        self._best: tuple[float, dict[str, float]] | None = None
        self._used_regions: list[Region] = []
        self._resumed = history is not None
        self._ran = False
        self._emit_callback: EventCallback | None = None
        if history is not None:
            self._replay(history)
        self.tiler = RegionTiler(
            description,
            self._used_regions,
            gap_um=self.config.session.region_gap_um,
            unbounded_columns=self.config.session.unbounded_columns,
        )
        self._region_frame: int | None = None  # the frame whose region is being taken
        self.regions = self._region_supply(history)
        short = self._sample_shortfall()
        if short is not None:
            self._notes.append(short)

    def _sample_shortfall(self) -> str | None:
        """A warning when the budget asks for more frames than the sample has fresh regions:
        said when the run opens, not found out as "sample is used up" at the end."""
        remaining = self.regions.remaining()
        wanted = self.config.session.budget_frames - self._done
        if remaining is None or wanted <= remaining:
            return None
        return (
            f"the budget asks for {wanted}{' more' if self._resumed else ''} frames but the "
            f"sample has only {remaining} "
            f"fresh regions ({self.tiler.columns} x {self.tiler.rows} fields of "
            f"{self.tiler.width_px} x {self.tiler.height_px} px): the session will end when "
            "the sample is used up; lower the budget or give the driver a larger sample extent"
        )

    @property
    def warnings(self) -> list[str]:
        """What the run will say as warnings when it opens (also in its ``opened`` event)."""
        return list(self._notes)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def folder(self) -> Path:
        return self.record.folder

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        loaded: LoadedConfig,
        driver: Driver,
        *,
        store: SessionStore | None = None,
        objectives: list[Objective] | None = None,
        scorer: Scorer | None = None,
        name: str | None = None,
        warm_from: Sequence[str] = (),
    ) -> Session:
        """Create a new session (its folder and ledger) for a connected ``driver``.

        ``warm_from``: earlier session ids, or ``["auto"]``, to warm-start from
        (``stedloop.session.warm_start``); checked before anything is created."""
        config = loaded.config
        store = store or SessionStore.from_config(config)
        objectives = objectives if objectives is not None else build_objectives(config, scorer)
        scalariser = _scalariser(loaded, objectives)
        seed = config.optimizer.random_seed
        seed = int(seed) if seed is not None else secrets.randbits(31)
        SearchSpace(config.params, config.safety)  # refuse an unusable space before creating
        description = driver.describe()
        created = {
            "config": config.model_dump(mode="json"),
            "param_space": config.params.model_dump(mode="json"),
            "safety": config.safety.model_dump(mode="json"),
            "objectives": [describe(o) for o in objectives],
            "scalarisation": scalariser.describe(),
            "seed": seed,
            "driver": description.as_dict(),
            "stedloop_version": __version__,
        }
        settings = resolve_score_transform(config.optimizer, config.objectives.scalarisation)
        warm, notes = warm_start.choose(
            store,
            warm_start.requested_sessions(warm_from),
            created,
            SearchSpace(config.params, config.safety),
            settings,
        )
        record = store.create(created, name)
        try:
            if warm is not None:  # before the first run: a resume finds it in the ledger
                record.ledger.record(warm)
        except BaseException:
            record.close()
            raise
        return cls(
            record,
            loaded,
            driver,
            objectives,
            scalariser,
            seed,
            description,
            notes=notes,
            warm=warm,
        )

    @classmethod
    def resume(
        cls,
        session_id: str,
        loaded: LoadedConfig,
        driver: Driver,
        *,
        store: SessionStore | None = None,
        objectives: list[Objective] | None = None,
        scorer: Scorer | None = None,
        force: bool = False,
    ) -> Session:
        """Continue a stopped or crashed session, rebuilding the optimizer from its ledger.

        A different parameter space or objectives is refused with the list of differences
        unless ``force``; so is a recorded space that no longer fits inside today's safety
        caps. Today's caps (``loaded``, the site's) always apply; the session's seed is kept."""
        config = loaded.config
        store = store or SessionStore.from_config(config)
        record = store.open(session_id)
        try:
            if FolderLock(record.folder).is_held_elsewhere():
                raise StedloopError(f"session {record.id} is running in another process")
            history = record.history()
            objectives = objectives if objectives is not None else build_objectives(config, scorer)
            scalariser = _scalariser(loaded, objectives)
            now = {
                "param_space": config.params.model_dump(mode="json"),
                "safety": config.safety.model_dump(mode="json"),
                "objectives": [describe(o) for o in objectives],
                "scalarisation": scalariser.describe(),
            }
            beyond_caps = recorded_space_beyond_caps(history.created.get("param_space"), loaded)
            if beyond_caps is not None and not force:
                raise ConfigError(
                    f"session {record.id} cannot resume under today's safety caps: "
                    f"{beyond_caps}; resume with --force to continue inside today's "
                    "parameter space"
                )
            changes = config_differences(history.created, now)
            cap_notes = [
                f"{change}: today's cap applies"
                for change in config_differences(
                    history.created, {"safety": now["safety"]}, keys=("safety",)
                )
            ]
            if changes and not force:
                raise ConfigError(
                    f"session {record.id} was created with another configuration, so its "
                    "recorded scores do not fit this one:\n  "
                    + "\n  ".join(changes)
                    + "\nresume with the session's own config, or force it (--force)"
                )
            description = driver.describe()
            return cls(
                record,
                loaded,
                driver,
                objectives,
                scalariser,
                int(history.created["seed"]),
                description,
                history=history,
                config_changes=changes,
                notes=cap_notes,
                warm=history.warm_start,
            )
        except BaseException:
            record.close()
            raise

    def _replay(self, history: SessionHistory) -> None:
        """Rebuild the optimizer and the frame counters from the ledger's events.

        A frame stopped after its ``scored`` event is told its recorded score and never
        acquired again; one stopped after ``acquired`` is scored from its TIFF; one stopped
        earlier is redone on a fresh region. The resume holds the folder (no other process
        runs the session)."""
        for frame_no in sorted(history.frames):
            record = history.frames[frame_no]
            try:
                params = ImagingParams.from_mapping(record.params)
                self._used_regions.extend(Region.from_dict(r) for r in record.regions)
            except (StedloopError, KeyError, TypeError, ValueError) as exc:
                raise DataError(
                    f"session {self.id}: frame {frame_no} in the ledger is malformed: {exc}"
                ) from None
            replayed = self._ask(frame_no)  # keeps hedge and RNG state identical to the run
            if replayed is not None and replayed != params and not self._config_changes:
                self._log(
                    "warning", f"replayed proposal of frame {frame_no} differs from the ledger"
                )
            scored = record.status in ("told", "scored")
            score = record.combined
            if self._config_changes and scored:
                # Forced resume with other objectives or weights: re-combine the recorded
                # per-objective values; a frame lacking one is kept out of the model.
                score = self.scalariser.combine(record.values)
                score = score if math.isfinite(score) else None
            if scored and score is not None:
                self._tell(self._told(params, record.acquired), score, record.params)
                self._done += 1
                if record.status == "scored":  # stopped before its told event: record it now
                    self._unrecorded.append(
                        ev.Told(
                            **self._outcome_fields(frame_no, record.params, record.values),
                            combined=score,
                            from_ledger=True,
                        )
                    )
            elif record.done or record.status == "scored":
                self._mark_failed(params)
                self._done += 1
                if record.status == "scored":
                    reason = _failure_reason(record.objective_errors)
                    self._unrecorded.append(
                        ev.Failed(
                            **self._outcome_fields(frame_no, record.params, record.values),
                            reason=reason,
                            from_ledger=True,
                        )
                    )
            else:  # the frame in flight: finished first (re-scored from its TIFF, or redone)
                tiff = self._recorded_tiff(record.tiff) if record.status == "acquired" else None
                self._pending = (frame_no, params, tiff)
            self._next_frame = frame_no + 1

    def _recorded_tiff(self, relative: str | None) -> Path | None:
        """The frame file the ledger names, if it exists inside the session's folder."""
        if not relative:  # the write failed: nothing to score from
            return None
        path = (self.folder / relative).resolve()
        if not path.is_relative_to(self.folder.resolve()) or not path.is_file():
            return None
        return path

    def _record_replayed_outcomes(self) -> None:
        for outcome in self._unrecorded:
            self._emit(outcome)
            self._log(
                "info",
                f"frame {outcome.frame} was scored before the session stopped: its recorded "
                "score is used, it is not acquired again",
            )
        self._unrecorded.clear()

    def _ask(self, frame_no: int) -> ImagingParams | None:
        try:
            return self.optimizer.ask(frame_no).params
        except StedloopError:
            return None

    def _told(self, params: ImagingParams, acquired: ev.Acquired | None) -> ImagingParams:
        """The point a replayed frame was told: from its recorded applied values, as live."""
        applied = acquired.params_applied if acquired is not None else None
        if not applied:
            return params
        try:
            return told_params(self.config.params, params, ImagingParams.from_mapping(applied))
        except (StedloopError, TypeError, ValueError):
            return params

    def _tell(self, params: ImagingParams, score: float, params_dict: dict[str, float]) -> None:
        try:
            self.optimizer.tell(params, score)
        except ParameterRejected as exc:  # only after a forced resume with another space
            self._log("warning", f"recorded point not told to the optimizer: {exc}")
        if self._best is None or score > self._best[0]:
            self._best = (score, dict(params_dict))

    def _mark_failed(self, params: ImagingParams) -> None:
        with contextlib.suppress(ParameterRejected):  # only after a forced resume
            self.optimizer.mark_failed(params)

    # -- the loop -------------------------------------------------------------------------
    def run(
        self, control: SessionControl | None = None, on_event: EventCallback | None = None
    ) -> SessionSummary:
        """Run until the budget, the target score, the end of the sample or a stop request."""
        if self._ran:
            raise StedloopError("a Session object runs once; resume the session to continue it")
        self._ran = True
        control = control or SessionControl()
        self._emit_callback = on_event
        lock = FolderLock(self.folder)
        lock.acquire()
        outcome = _Outcome("failed", "the session did not start")
        try:
            if self._resumed:  # temporary files of frame writes a kill cut short
                remove_stale_temp_files(self.folder / FRAMES_DIR)
            control.attach_abort(self.driver.request_abort)
            self._emit(
                ev.Opened(
                    resumed=self._resumed,
                    budget_frames=self.config.session.budget_frames,
                    target_score=self.config.session.target_score,
                    config_changes=self._config_changes,
                    notes=self._notes,
                    config=self.config.model_dump(mode="json"),
                    event_schema=ev.EVENT_SCHEMA_VERSION,
                    **self._progress(),
                )
            )
            for note in self._notes:
                self._log("warning", note)
            outcome = self._loop(control)
        except KeyboardInterrupt:
            outcome = _Outcome("stopped", "interrupted (keyboard interrupt)")
            raise
        except StorageError as exc:  # the disk refused a ledger write: resumable once freed
            outcome = _Outcome("failed", f"{exc}; free disk space, then resume the session")
            self._log("error", outcome.reason)
        except Exception as exc:  # a fault the loop cannot record: stop, safely, with the cause
            outcome = _Outcome("failed", f"internal error: {type(exc).__name__}: {exc}")
            self._log("error", outcome.reason, trace=traceback.format_exc())
        finally:
            try:
                self._make_safe()
                self._finish(outcome)
                self.optimizer.join_background()  # no thread of the run outlives it
            finally:
                control.mark_finished()
                lock.release()
        return self._summary(outcome)

    def _loop(self, control: SessionControl) -> _Outcome:
        session = self.config.session
        self._record_replayed_outcomes()
        while True:
            if control.stop_requested:
                reason = "aborted on request" if control.abort_requested else "stopped on request"
                return _Outcome("stopped", reason)
            if control.pause_requested:
                self._pause(control)
                continue
            if self._done >= session.budget_frames:
                return _Outcome("finished", f"frame budget of {session.budget_frames} spent")
            recorded: Path | None = None
            if self._pending is not None:
                frame_no, params, recorded = self._pending
                self._pending = None
                if recorded is None and self._outside_today(frame_no, params):
                    continue
                what = "scoring the recorded" if recorded else "redoing"
                self._log("info", f"{what} frame {frame_no}, in flight when the session stopped")
            else:
                frame_no = self._next_frame
                self._next_frame += 1
                started = time.perf_counter()
                proposal = self.optimizer.ask(frame_no)
                params = proposal.params
                self._emit(
                    ev.Proposed(
                        frame=frame_no,
                        params=params.as_dict(),
                        source=proposal.source,
                        decision_ms=(time.perf_counter() - started) * 1e3,
                    )
                )
            self.optimizer.prepare()  # slow surrogate work overlaps the acquisition
            try:
                if recorded is not None:
                    outcome = self._score_recorded(frame_no, params, recorded, control)
                else:
                    outcome = self._frame(frame_no, params, control)
            except SampleExhausted as exc:
                return _Outcome("finished", str(exc))
            except OverviewRefused as exc:
                return _Outcome("failed", str(exc))
            if outcome is not None:
                return outcome
            target = session.target_score
            if target is not None and self._best is not None and self._best[0] >= target:
                return _Outcome("finished", f"target score {target:g} reached")

    def _frame(
        self, frame_no: int, params: ImagingParams, control: SessionControl
    ) -> _Outcome | None:
        """Acquire, store, score and tell one frame; an outcome when the session must end."""
        timings: dict[str, float] = {}
        frame, outcome = self._acquire(frame_no, params, control, timings)
        if frame is None:
            return outcome
        t1 = time.perf_counter()
        path = self.record.frame_path(frame_no)
        tiff: Path | None = path
        try:
            self._keep_unrecorded_file(frame_no, path)
            write_frame(path, frame, {"session": self.id, "frame": frame_no})
        except OSError as exc:  # the disk (full, read-only, failing): stop exposing the sample
            message = f"frame {frame_no} could not be written: {exc}"
            with contextlib.suppress(StorageError):
                self._emit(ev.Error(frame=frame_no, stage="write", error=message))
            self._log("error", message)
            return _Outcome("failed", f"{message}; free disk space, then resume the session")
        except Exception as exc:  # e.g. counts beyond uint16, a refused overwrite: say so
            message = f"frame {frame_no} could not be written: {type(exc).__name__}: {exc}"
            self._emit(ev.Error(frame=frame_no, stage="write", error=message))
            self._log("error", message)
            tiff = None
        self._emit(
            ev.Acquired(
                frame=frame_no,
                tiff=str(tiff.relative_to(self.folder)) if tiff else None,
                params_applied=frame.params.as_dict(),
                region=frame.region.as_dict(),
                pixel_size_nm=frame.pixel_size_nm,
                started_at_s=frame.started_at_s,
                finished_at_s=frame.finished_at_s,
                metadata=json_metadata(frame.metadata),
            )
        )
        timings["write_ms"] = (time.perf_counter() - t1) * 1e3
        return self._score(frame_no, params, frame, tiff, timings, control)

    def _score_recorded(
        self, frame_no: int, params: ImagingParams, tiff: Path, control: SessionControl
    ) -> _Outcome | None:
        """Score the frame in flight from the TIFF it recorded; redo it if that is unusable."""
        try:
            frame = read_frame(tiff)
        except DataError as exc:
            self._log("warning", f"frame {frame_no}: {exc}; redoing it on a fresh region")
            return self._frame(frame_no, params, control)
        return self._score(frame_no, params, frame, tiff, {}, control)

    def _keep_unrecorded_file(self, frame_no: int, path: Path) -> None:
        """Frame files are written once: a file already at ``path`` is no usable record of
        this frame (written just before a crash cut off its ledger event, or damaged), so it
        is kept under another name, and the ledger says so."""
        if not os.path.lexists(path):
            return
        kept = set_aside(path)
        message = (
            f"frame {frame_no}: {path.name} already existed without a usable ledger record; "
            f"kept as {kept.name}"
        )
        self._emit(
            ev.Error(
                frame=frame_no,
                stage="write",
                error=message,
                kept_as=str(kept.relative_to(self.folder)),
            )
        )
        self._log("warning", message)

    def _score(
        self,
        frame_no: int,
        params: ImagingParams,
        frame: Frame,
        tiff: Path | None,
        timings: dict[str, float],
        control: SessionControl,
    ) -> _Outcome | None:
        """Evaluate the objectives on a recorded frame, record the scores and tell them."""
        t2 = time.perf_counter()
        while True:
            try:
                values, errors = self._evaluate(frame)
                break
            except ScoringUnavailable as exc:  # the scorer is missing, not the frame
                stopped = self._pause_for_scorer(frame_no, exc, control)
                if stopped is not None:
                    return stopped
                t2 = time.perf_counter()
        combined = self.scalariser.combine(values)
        t3 = time.perf_counter()
        timings["score_ms"] = (t3 - t2) * 1e3
        finite = math.isfinite(combined)
        self._emit(
            ev.Scored(
                frame=frame_no, values=values, errors=errors, combined=combined if finite else None
            )
        )
        if finite:
            # The model learns from what the sample saw: the values the driver applied.
            self._tell(
                told_params(self.config.params, params, frame.params), combined, params.as_dict()
            )
        else:
            self._mark_failed(params)
        self._done += 1
        fields = self._outcome_fields(frame_no, params.as_dict(), values)
        tiff_path = str(tiff) if tiff else None
        if finite:
            self._emit(ev.Told(**fields, combined=combined, tiff=tiff_path, timings_ms=timings))
        else:
            reason = _failure_reason(errors)
            self._emit(ev.Failed(**fields, reason=reason, tiff=tiff_path, timings_ms=timings))
            self._log("warning", f"frame {frame_no} failed to score ({reason}); not told")
        return None

    @property
    def progress(self) -> ev.Progress:
        """Frames with a final outcome over all runs (counted here only) and the best point."""
        return ev.Progress(
            frames_done=self._done,
            best_score=self._best[0] if self._best else None,
            best_params=dict(self._best[1]) if self._best else None,
        )

    def _progress(self) -> dict[str, Any]:
        return self.progress.model_dump()

    def _outcome_fields(
        self, frame_no: int, params: dict[str, float], values: dict[str, float | None]
    ) -> dict[str, Any]:
        """What every outcome event of a frame carries (after ``_done`` counted it)."""
        return {
            "frame": frame_no,
            "params": params,
            "values": values,
            "budget_frames": self.config.session.budget_frames,
            **self._progress(),
        }

    def _request(self, frame_no: int, params: ImagingParams, region: Region) -> AcquireRequest:
        """The frame's request; drivers that save raw data (Imspector's .obf) put it beside
        the frame's OME-TIFF."""
        folder = self.record.frame_path(frame_no).parent
        return AcquireRequest(params, region, RawOutput(folder, f"{frame_no:04d}"))

    def _acquire(
        self,
        frame_no: int,
        params: ImagingParams,
        control: SessionControl,
        timings: dict[str, float],
    ) -> tuple[Frame | None, _Outcome | None]:
        session = self.config.session
        attempts = session.driver_retries + 1
        last_error = ""
        refused = False
        for attempt in range(1, attempts + 1):
            self._region_frame = frame_no
            region = self.regions.take()  # a fresh region per attempt: a failed one may be bleached
            self._emit(ev.Acquiring(frame=frame_no, attempt=attempt, region=region.as_dict()))
            started = time.perf_counter()
            try:
                self.config.safety.check(params)  # the session's own check, whatever the driver
                frame = self.driver.acquire(self._request(frame_no, params, region))
                self._check_applied(frame)
                timings["acquire_ms"] = (time.perf_counter() - started) * 1e3
                return frame, None
            except Exception as exc:  # any backend fault is recorded, never propagated
                aborted = isinstance(exc, AcquisitionAborted) and control.abort_requested
                # A refusal (a cap, a range) gives the same answer on any region: no retry.
                refused = isinstance(exc, ParameterRejected)
                last_error = f"{type(exc).__name__}: {exc}"
                will_retry = attempt < attempts and not control.stop_requested and not refused
                self._emit(
                    ev.Error(
                        frame=frame_no,
                        stage="acquire",
                        attempt=attempt,
                        error=last_error,
                        aborted=aborted,
                        refused=refused,
                        will_retry=will_retry,
                    )
                )
                if aborted:
                    self._log("warning", f"frame {frame_no} aborted")
                    return None, _Outcome(
                        "stopped", "aborted on request; frame in flight discarded"
                    )
                if isinstance(exc, SafetyCapExceeded):
                    reason = f"frame {frame_no} refused by the safety caps: {exc}"
                    self._log("error", reason)
                    return None, _Outcome("failed", reason)
                level = "warning" if will_retry else "error"
                self._log(
                    level, f"frame {frame_no} attempt {attempt}/{attempts} failed: {last_error}"
                )
                if not will_retry:
                    break
                self._make_safe()
                time.sleep(session.retry_delay_s)
                if control.pause_requested:  # e.g. the daemon's watchdog after a worker fault
                    self._pause(control)
                if control.stop_requested:
                    break
        if control.stop_requested:
            return None, _Outcome("stopped", "stopped on request")
        times = "once" if attempt == 1 else f"{attempt} times"
        failure = "driver refused it" if refused else f"driver failed {times}"
        if session.on_driver_failure == "continue":
            self._mark_failed(params)
            self._done += 1
            fields = self._outcome_fields(frame_no, params.as_dict(), {})
            self._emit(ev.Failed(**fields, reason=f"{failure}: {last_error}", timings_ms=timings))
            return None, None
        return None, _Outcome("failed", f"{failure} on frame {frame_no}: {last_error}")

    def _outside_today(self, frame_no: int, params: ImagingParams) -> bool:
        """A frame in flight at a stop is redone with its recorded parameters only if they lie
        within today's caps and space (a forced resume may have narrowed them); otherwise it
        is recorded as failed, never sent."""
        try:
            self.config.safety.check(params)
            self.config.params.validate_point(params)
        except ParameterRejected as exc:
            reason = f"not redone: its recorded parameters are outside today's settings: {exc}"
            self._mark_failed(params)
            self._done += 1
            self._emit(
                ev.Failed(**self._outcome_fields(frame_no, params.as_dict(), {}), reason=reason)
            )
            self._log("warning", f"frame {frame_no} {reason}")
            return True
        return False

    def _check_applied(self, frame: Frame) -> None:
        """The values the driver reports as applied must lie within the site's caps too: a
        driver whose calibration is off is stopped at its first frame, not trusted."""
        problems = self.config.safety.violations(frame.params)
        if problems:
            raise SafetyCapExceeded(
                f"the driver reports it applied {frame.params.describe()}: " + "; ".join(problems)
            )

    def _evaluate(self, frame: Frame) -> tuple[dict[str, float | None], dict[str, str]]:
        """Each objective's value of ``frame``; ``ScoringUnavailable`` passes through (the
        frame is kept for later), any other fault fails that objective's value."""
        values: dict[str, float | None] = {}
        errors: dict[str, str] = {}
        for objective in self.objectives:
            try:
                value = float(objective.evaluate(frame))
            except ScoringUnavailable:
                raise
            except Exception as exc:  # a failing objective fails the point, not the session
                values[objective.name] = None
                errors[objective.name] = f"{type(exc).__name__}: {exc}"
                continue
            if math.isfinite(value):
                values[objective.name] = value
            else:
                values[objective.name] = None
                errors[objective.name] = f"not a finite number ({value})"
        return values, errors

    def _pause_for_scorer(
        self, frame_no: int, exc: ScoringUnavailable, control: SessionControl
    ) -> _Outcome | None:
        """Pause (lasers safe) with one message saying why, then score the frame again on
        resume; a stop while paused ends the run with the frame recorded but unscored, so a
        resume of the session scores it from its TIFF. Never drops the frame."""
        self._log(
            "error",
            f"frame {frame_no} could not be scored: {exc}. The session is paused and the "
            "frame is kept: bring the scoring service back (or fix its token, or set "
            'quality.fallback = "local"), then resume the session',
        )
        control.request_pause()
        self._pause(control)
        if control.stop_requested:
            return _Outcome(
                "stopped",
                f"stopped while paused for the scoring service; frame {frame_no} is kept and "
                "is scored when the session is resumed",
            )
        return None

    def _pause(self, control: SessionControl) -> None:
        if not control.enter_pause():
            return
        self._make_safe()
        self._emit(ev.Paused(**self._progress()))
        while not control.wait_while_paused(timeout_s=0.5):
            pass
        if control.stop_requested:
            return
        control.mark_running()
        self._emit(ev.Resumed(**self._progress()))

    # -- regions from confocal overviews (issue 19, item 2) --------------------------------
    def _region_supply(self, history: SessionHistory | None) -> RegionTiler | OverviewRegions:
        """The overview-guided supply when configured and the driver can; else the tiling."""
        section = self.config.session.overview
        if not section.enabled:
            return self.tiler
        if not takes_overviews(self.driver, self.description):
            self._notes.append(
                f"session.overview is enabled but the {self.description.name} driver takes no "
                "overviews: regions come from the tiling"
            )
            return self.tiler
        recorded = [e for e in history.events if isinstance(e, ev.OverviewTaken)] if history else []
        return OverviewRegions(
            self.description,
            section,
            self.tiler,
            self._used_regions,
            recorded,
            take=self._take_overview,
            record=self._record_overview,
            say=self._log,
            unbounded_columns=self.config.session.unbounded_columns,
        )

    def _take_overview(self, index: int, request: OverviewRequest) -> Overview | None:
        """The overview from the driver; None (recorded) when it failed. Its dose is held to
        the site's caps before it is sent and as applied: a refusal ends the session."""
        try:
            self.config.safety.check(request.params)
            assert isinstance(self.driver, OverviewDriver)
            overview = self.driver.acquire_overview(request)
            problems = self.config.safety.violations(overview.params)
            if problems:
                raise SafetyCapExceeded(
                    f"the driver reports it applied {overview.params.describe()}: "
                    + "; ".join(problems)
                )
            return overview
        except SafetyCapExceeded as exc:
            message = f"overview {index} refused by the safety caps: {exc}"
            self._emit(
                ev.Error(frame=self._region_frame, stage="overview", error=message, refused=True)
            )
            self._log("error", message)
            raise OverviewRefused(message) from None
        except Exception as exc:  # any other fault: recorded; the tiling takes over
            message = f"overview {index} failed: {type(exc).__name__}: {exc}"
            self._emit(ev.Error(frame=self._region_frame, stage="overview", error=message))
            self._make_safe()
            return None

    def _record_overview(
        self, index: int, request: OverviewRequest, overview: Overview, picks: Picks
    ) -> None:
        path = overview_path(self.folder, index)
        tiff: str | None = None
        try:
            write_overview(path, overview)
            tiff = path.relative_to(self.folder).as_posix()
        except (OSError, StedloopError) as exc:  # the picks still hold: say so and go on
            message = f"overview {index} could not be written: {type(exc).__name__}: {exc}"
            self._emit(ev.Error(frame=self._region_frame, stage="write", error=message))
            self._log("warning", message)
        self._emit(
            ev.OverviewTaken(
                overview=index,
                before_frame=self._region_frame,
                area={
                    "x_um": overview.x_um,
                    "y_um": overview.y_um,
                    "width_um": overview.width_um,
                    "height_um": overview.height_um,
                },
                pixel_size_nm=overview.pixel_size_nm,
                params_applied=overview.params.as_dict(),
                light_dose_per_pixel_uj=overview.params.light_dose_per_pixel_uj(),
                tiff=tiff,
                regions=[p.as_dict() for p in picks.regions],
                candidates=picks.candidates,
                in_band=picks.in_band,
                threshold_counts=picks.threshold_counts,
            )
        )
        self._log(
            "info",
            f"overview {index}: {len(picks.regions)} regions picked "
            f"({picks.in_band} of {picks.candidates} fields within the bands)",
        )

    # -- ending ---------------------------------------------------------------------------
    def _make_safe(self) -> None:
        try:
            self.driver.safe_state()
        except Exception as exc:  # keep going: the caller still needs the ledger closed
            self._log("error", f"driver.safe_state() failed: {type(exc).__name__}: {exc}")

    def _finish(self, outcome: _Outcome) -> None:
        cls = ev.Finished if outcome.state == "finished" else ev.Stopped
        end = cls(state=outcome.state, reason=outcome.reason, **self._progress())
        try:
            self.record.ledger.record(end)
        except Exception as exc:  # the disk may be what failed: listeners still hear the end
            self._log("error", f"cannot record the end of the session: {exc}")
        self._notify(end)

    def _summary(self, outcome: _Outcome) -> SessionSummary:
        return SessionSummary(
            id=self.id,
            state=outcome.state,
            frames=self._done,
            best_params=self._best[1] if self._best else None,
            best_score=self._best[0] if self._best else None,
            stop_reason=outcome.reason,
            folder=self.folder,
        )

    def close(self) -> None:
        self.record.close()

    # -- events ---------------------------------------------------------------------------
    def _emit(self, event: ev.SessionEvent) -> None:
        """Emit ``event`` once: the ledger records it first (durably; a refusal raises
        ``StorageError`` and the listener never hears of it), then the listener."""
        if event.recorded:
            self.record.ledger.record(event)
        self._notify(event)

    def _notify(self, event: ev.SessionEvent) -> None:
        if self._emit_callback is None:
            return
        with contextlib.suppress(Exception):  # a broken listener must not stop the loop
            self._emit_callback(event)

    def _log(self, level: str, message: str, trace: str | None = None) -> None:
        self._emit(ev.Log(level=level, message=message, traceback=trace))


def _failure_reason(errors: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in errors.items()) or "objective not finite"


def _scalariser(loaded: LoadedConfig, objectives: list[Objective]) -> Scalariser:
    section = loaded.config.objectives
    return Scalariser(objectives, section.weights, section.scalarisation, section.bounds)


def config_differences(
    created: dict[str, Any], now: dict[str, Any], keys: tuple[str, ...] = COMPATIBILITY_KEYS
) -> list[str]:
    """Human-readable differences between a session's snapshot and the current settings."""
    from stedloop.config.loader import flatten

    changes = []
    for key in keys:
        if key == "objectives":
            before = [o.get("name") for o in created.get(key, [])]
            after = [o.get("name") for o in now.get(key, [])]
            if before != after:
                changes.append(f"objectives: {before} (session) vs {after} (now)")
                continue
        old = flatten({key: _listify(created.get(key))})
        new = flatten({key: _listify(now.get(key))})
        for dotted in sorted(set(old) | set(new)):
            if old.get(dotted) != new.get(dotted):
                changes.append(
                    f"{_config_key(dotted)}: {old.get(dotted)!r} (session) "
                    f"vs {new.get(dotted)!r} (now)"
                )
    return changes


def _config_key(dotted: str) -> str:
    """The snapshot's key as the config file spells it (param_space.x -> params.x)."""
    head, _, rest = dotted.partition(".")
    head = {"param_space": "params", "scalarisation": "objectives"}.get(head, head)
    return f"{head}.{rest}" if rest else head


def _listify(value: Any) -> Any:
    """Lists of objective descriptions become name-keyed tables so differences name them."""
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, dict) and "name" in v for v in value)
    ):
        return {v["name"]: _listify({k: x for k, x in v.items() if k != "name"}) for v in value}
    if isinstance(value, tuple):
        return list(value)
    return value


def json_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The JSON-friendly part of a frame's metadata (arrays such as ground truth stay out)."""
    kept: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, np.ndarray):
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if value is None or isinstance(value, (str, int, float, bool, list, dict, tuple)):
            kept[key] = value
    return kept


def interrupted_sessions(store: SessionStore) -> list[SessionInfo]:
    """Sessions whose ledger ends without a stopped/finished event and that no live process
    is running: crashed or killed, resumable with ``Session.resume``."""
    return [info for info in store.list() if info.interrupted and not _held_elsewhere(info)]


def _held_elsewhere(info: SessionInfo) -> bool:
    try:
        return FolderLock(info.folder).is_held_elsewhere()
    except OSError:  # the lock cannot be checked (e.g. a read-only folder): not resumable here
        return True
