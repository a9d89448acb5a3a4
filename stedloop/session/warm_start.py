"""Warm start: which earlier sessions a new one learns from, read from their ledgers.

``--warm-start SESSION...`` names them; ``--warm-start auto`` takes the ``AUTO_SESSIONS``
most recent comparable ones. Comparable: the same driver, structure label
(``session.structure``, else the driver's own), parameter space, objectives and
scalarisation, so their scores measure the same thing over the same box. Their scored frames
(the settings applied and the combined score) go to ``stedloop.optimize.prior``, which picks
the settings of the first warm-up frames; the choice is recorded as one ``warm_start`` event,
and a resume rebuilds the optimizer from that event alone (an earlier session that gained
frames since, or was deleted, changes nothing). Today's safety caps (the site's) decide what
may be proposed: settings beyond them are never chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stedloop import events as ev
from stedloop.config.schema import OptimizerSection
from stedloop.errors import ConfigError, DataError, StedloopError
from stedloop.optimize import SearchSpace
from stedloop.optimize.prior import PriorObservation, prior_design
from stedloop.params import ImagingParams
from stedloop.store.history import SessionHistory
from stedloop.store.session_store import SessionStore

AUTO = "auto"
#: Earlier sessions ``--warm-start auto`` reads, the most recent comparable ones.
AUTO_SESSIONS = 3
#: The parts of a ``created`` snapshot two sessions must share (besides driver and structure).
COMPARED_KEYS = ("param_space", "objectives", "scalarisation")


def requested_sessions(values: Sequence[str] | None) -> list[str]:
    """``--warm-start`` values as a list (repeated and/or comma-separated); ``ConfigError``
    when ``auto`` is mixed with ids."""
    names = [v.strip() for value in values or () for v in value.split(",") if v.strip()]
    if AUTO in names and len(names) > 1:
        raise ConfigError("--warm-start takes either 'auto' or session ids, not both")
    return names


def structure_label(created: dict[str, Any]) -> str | None:
    """A session's structure label: ``session.structure`` of its config, else its driver's
    (the simulator reports the structure it simulates)."""
    session = (created.get("config") or {}).get("session") or {}
    label = session.get("structure")
    if label is None:
        label = ((created.get("driver") or {}).get("details") or {}).get("structure")
    return str(label) if label is not None else None


def differences(earlier: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Why an earlier session's snapshot is not comparable with ``now`` (empty: it is)."""
    from stedloop.session.runner import config_differences  # runner imports this module

    found = []
    driver_then = (earlier.get("driver") or {}).get("name")
    driver_now = (now.get("driver") or {}).get("name")
    if driver_then != driver_now:
        found.append(f"driver {driver_then!r} (earlier) vs {driver_now!r} (now)")
    if structure_label(earlier) != structure_label(now):
        found.append(
            f"structure {structure_label(earlier)!r} (earlier) vs {structure_label(now)!r} (now)"
        )
    found += [
        change.replace("(session)", "(earlier)")
        for change in config_differences(earlier, now, COMPARED_KEYS)
    ]
    return found


def observations(session_id: str, history: SessionHistory) -> list[PriorObservation]:
    """The session's scored frames: the settings applied (as asked, where the ledger has no
    applied values) and the combined score told."""
    found = []
    for record in history.told_frames():
        if record.combined is None:
            continue
        applied = record.acquired.params_applied if record.acquired else None
        try:
            params = ImagingParams.from_mapping(applied or record.params)
        except (StedloopError, KeyError, TypeError, ValueError):
            continue  # a malformed row: not worth failing the new session for
        found.append(PriorObservation(session_id, record.frame, params, float(record.combined)))
    return found


def choose(
    store: SessionStore,
    requested: Sequence[str],
    now: dict[str, Any],
    space: SearchSpace,
    settings: OptimizerSection,
) -> tuple[ev.WarmStarted | None, list[str]]:
    """The warm start of a new session whose ``created`` snapshot will be ``now``: its event
    (None: a cold start) and notes for the user. Named sessions must exist, be comparable and
    hold scored frames (``ConfigError``/``SessionNotFound`` saying which); ``auto`` finding
    none starts cold, with a note."""
    if not requested:
        return None, []
    auto = list(requested) == [AUTO]
    chosen = _auto(store, now) if auto else [_named(store, name, now) for name in requested]
    if not chosen:
        return None, [
            "--warm-start auto found no comparable earlier session with scored frames "
            f"(same driver, structure {structure_label(now)!r}, space and objectives): "
            "starting cold"
        ]
    seen: dict[str, SessionHistory] = dict(chosen)  # a session named twice counts once
    pooled = [o for sid, history in seen.items() for o in observations(sid, history)]
    design = prior_design(space, settings, pooled)
    notes = []
    if not design:
        notes.append(
            f"warm start from {', '.join(seen)}: none of their {len(pooled)} scored settings "
            "lies within today's parameter space and safety caps; the warm-up is space-filling"
        )
    event = ev.WarmStarted(
        sessions=list(seen),
        auto=auto,
        structure=structure_label(now),
        observations=len(pooled),
        prior_points=[
            {"session": o.session, "frame": o.frame, "params": o.params.as_dict(), "score": o.score}
            for o in design
        ],
    )
    return event, notes


def prior_params(event: ev.WarmStarted | None) -> list[ImagingParams]:
    """The settings of the first warm-up frames a ``warm_start`` event recorded."""
    if event is None:
        return []
    try:
        return [ImagingParams.from_mapping(p["params"]) for p in event.prior_points]
    except (StedloopError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"the ledger's warm_start event is malformed: {exc}") from None


def _named(store: SessionStore, name: str, now: dict[str, Any]) -> tuple[str, SessionHistory]:
    record = store.open(name, readonly=True)  # SessionNotFound: one line naming the id
    try:
        history = record.history()
    except DataError as exc:
        raise DataError(f"cannot warm-start from session {record.id}: {exc}") from None
    finally:
        record.close()
    problems = differences(history.created, now)
    if problems:
        raise ConfigError(
            f"session {record.id} is not comparable with this one, so it cannot warm-start "
            f"it: {'; '.join(problems)}"
        )
    if not observations(record.id, history):
        raise ConfigError(f"session {record.id} has no scored frames to warm-start from")
    return record.id, history


def _auto(store: SessionStore, now: dict[str, Any]) -> list[tuple[str, SessionHistory]]:
    found: list[tuple[str, SessionHistory]] = []
    # By creation time: ids sort by the second they were made in, then by a random suffix.
    newest = sorted(store.list(), key=lambda i: (i.created_at_s, i.id), reverse=True)
    for info in newest:
        if info.reason is not None or info.frames == 0:
            continue  # unreadable, or nothing recorded
        record = store.open(info.id, readonly=True)
        try:
            history = record.history()
        except (DataError, StedloopError):
            continue
        finally:
            record.close()
        if not differences(history.created, now) and observations(info.id, history):
            found.append((info.id, history))
        if len(found) == AUTO_SESSIONS:
            break
    return found
