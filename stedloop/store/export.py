"""Tables derived from a session's ledger: every frame as CSV, the best point, the Pareto front."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stedloop import events as ev
from stedloop.objectives.pareto import pareto_front
from stedloop.params import PARAM_NAMES
from stedloop.store.history import FrameRecord, SessionHistory


def objective_directions(history: SessionHistory) -> dict[str, str]:
    return {o["name"]: o["direction"] for o in history.created.get("objectives", [])}


def objective_units(history: SessionHistory) -> dict[str, str]:
    """Each objective's unit as its plugin declared it (stored in the ``created`` event)."""
    return {o["name"]: o.get("unit", "") for o in history.created.get("objectives", [])}


def objective_column(name: str, unit: str) -> str:
    """The CSV column of an objective: its name and unit, ``resolution_nm``, ``quality_score``."""
    suffix = re.sub(r"[^0-9A-Za-z]+", "_", unit.replace("µ", "u")).strip("_").lower()
    return f"{name}_{suffix}" if suffix and not name.endswith(f"_{suffix}") else name


def iso_utc(time_s: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (``2026-12-01T16:40:12.345Z``); None stays None."""
    if time_s is None:
        return None
    moment = datetime.fromtimestamp(time_s, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def frame_rows(
    history: SessionHistory, tiff_paths: Mapping[int, str] | None = None
) -> list[dict[str, Any]]:
    """One flat row per frame number (in order), whatever its outcome.

    ``tiff_paths``: the path to give for each frame's file (the export gives paths relative
    to the CSV); without it, the ledger's path (relative to the session folder).
    """
    units = objective_units(history)
    columns = {name: objective_column(name, unit) for name, unit in units.items()}
    rows = []
    for frame_no in sorted(history.frames):
        record = history.frames[frame_no]
        acquired = record.acquired
        applied = acquired.params_applied if acquired else {}
        region = (acquired.region if acquired else None) or (
            record.regions[-1] if record.regions else {}
        )
        row: dict[str, Any] = {"frame": frame_no, "status": record.status, "source": record.source}
        # a warm start's frame: the earlier session and frame whose setting it took
        row["prior_from"] = history.prior_origin(frame_no)
        # when the frame's acquisition began (the instrument's clock) and when the ledger
        # recorded its outcome
        row["acquired_at_utc"] = iso_utc(acquired.started_at_s if acquired else None)
        row["recorded_at_utc"] = iso_utc(record.recorded_at_s)
        row.update({name: record.params.get(name) for name in PARAM_NAMES})
        row.update({f"applied_{name}": applied.get(name) for name in PARAM_NAMES})
        row.update({column: record.values.get(name) for name, column in columns.items()})
        row["combined_score"] = record.combined
        row["attempts"] = len(record.regions)
        row["region_x_um"] = region.get("x_um")
        row["region_y_um"] = region.get("y_um")
        row["tiff"] = record.tiff if tiff_paths is None else tiff_paths.get(frame_no)
        errors = [e.error for e in record.errors] + [
            f"{k}: {v}" for k, v in record.objective_errors.items()
        ]
        row["errors"] = " | ".join(e for e in errors if e)
        rows.append(row)
    return rows


def write_frames_csv(
    history: SessionHistory, path: Path, tiff_paths: Mapping[int, str] | None = None
) -> Path:
    rows = frame_rows(history, tiff_paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0]) if rows else ["frame", "status"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def session_pareto(history: SessionHistory) -> list[FrameRecord]:
    """The scored frames no other scored frame beats on every objective."""
    directions = objective_directions(history)
    scored = [f for f in history.done_frames() if f.values]
    return pareto_front(scored, [f.values for f in scored], directions)


def summary(history: SessionHistory) -> dict[str, Any]:
    """What ``stedloop session show`` prints: state, best point, Pareto front."""
    best = history.best()
    warm = history.warm_start
    return {
        "id": history.created.get("id"),
        "name": history.created.get("name"),
        "state": history.state,
        "stop_reason": history.stop_reason,
        "frames": history.frames_done,
        "failed_frames": sum(1 for f in history.done_frames() if f.status == "failed"),
        "objectives": history.created.get("objectives", []),
        "scalarisation": history.created.get("scalarisation"),
        "seed": history.created.get("seed"),
        "driver": (history.created.get("driver") or {}).get("name"),
        "warm_start": None if warm is None else warm.ledger_payload(),
        "best": None
        if best is None
        else {
            "frame": best.frame,
            "params": best.params,
            "values": best.values,
            "combined": best.combined,
        },
        "pareto_front": [
            {"frame": f.frame, "params": f.params, "values": f.values, "combined": f.combined}
            for f in session_pareto(history)
        ],
        "overviews": overview_summary(history),
    }


def overview_summary(history: SessionHistory) -> list[dict[str, Any]]:
    """Each confocal overview the session took, what was picked and which frames used it:
    ``frames`` of the overview, and ``frames`` of each picked region (``regions``, in imaging
    order, with its size in µm at the frames' pixel size)."""
    frame_pixel_nm = (history.created.get("driver") or {}).get("pixel_size_nm")
    um_per_px = float(frame_pixel_nm) / 1000 if frame_pixel_nm else None
    # frames by the corner of each region they were acquired on (attempts included)
    on_corner: dict[tuple[Any, Any], set[int]] = {}
    for record in history.frames.values():
        for region in record.regions:
            on_corner.setdefault((region.get("x_um"), region.get("y_um")), set()).add(record.frame)
    rows = []
    for event in history.events:
        if not isinstance(event, ev.OverviewTaken):
            continue
        regions: list[dict[str, Any]] = []
        imaged: set[int] = set()
        for picked in event.regions:
            on_it = sorted(on_corner.get((picked.get("x_um"), picked.get("y_um")), set()))
            imaged.update(on_it)
            regions.append(
                {
                    **picked,
                    "width_um": None if um_per_px is None else picked["width_px"] * um_per_px,
                    "height_um": None if um_per_px is None else picked["height_px"] * um_per_px,
                    "frames": on_it,
                }
            )
        rows.append(
            {
                "overview": event.overview,
                "before_frame": event.before_frame,
                "area": event.area,
                "pixel_size_nm": event.pixel_size_nm,
                "params_applied": event.params_applied,
                "light_dose_per_pixel_uj": event.light_dose_per_pixel_uj,
                "tiff": event.tiff,
                "regions_picked": len(event.regions),
                "candidates": event.candidates,
                "in_band": event.in_band,
                "threshold_counts": event.threshold_counts,
                "frame_pixel_size_nm": frame_pixel_nm,
                "regions": regions,
                "frames": sorted(imaged),
            }
        )
    return rows
