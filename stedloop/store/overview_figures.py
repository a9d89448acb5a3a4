"""Where a session imaged: each confocal overview with the regions picked from it and the
frames taken on them (issue 19, item 5).

One PNG per overview (``overview_NNNN.png``): the overview in gray (linear, 0 to its 99.5th
percentile), in sample µm; the picked regions as dashed outlines; the regions frames were
acquired on as solid outlines, labelled with the frame number (green: told, red: failed,
yellow: no outcome yet).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stedloop import events as ev
from stedloop.errors import DataError
from stedloop.frame import Region
from stedloop.store.history import SessionHistory
from stedloop.store.overviews import read_overview
from stedloop.store.plots import session_title

UPPER_PERCENTILE = 99.5
STATUS_COLOURS = {"told": "#2ca02c", "failed": "#d62728"}


def overview_events(history: SessionHistory) -> list[ev.OverviewTaken]:
    return [e for e in history.events if isinstance(e, ev.OverviewTaken)]


def frames_in(
    history: SessionHistory, area: dict[str, float], pixel_size_nm: float
) -> list[tuple[int, Region, str]]:
    """(frame, region, status) of every acquisition attempt inside ``area``."""
    inside = []
    for record in history.frames.values():
        for data in record.regions:
            region = Region.from_dict(data)
            x1 = region.x_um + region.width_px * pixel_size_nm / 1000
            y1 = region.y_um + region.height_px * pixel_size_nm / 1000
            tolerance = 1e-6
            if (
                region.x_um >= area["x_um"] - tolerance
                and region.y_um >= area["y_um"] - tolerance
                and x1 <= area["x_um"] + area["width_um"] + tolerance
                and y1 <= area["y_um"] + area["height_um"] + tolerance
            ):
                inside.append((record.frame, region, record.status))
    return inside


def write_overview_figures(
    history: SessionHistory, session_folder: Path, folder: Path
) -> list[Path]:
    """One PNG per recorded overview whose TIFF is readable; the files written."""
    events = overview_events(history)
    frame_pixel_nm = float((history.created.get("driver") or {}).get("pixel_size_nm") or 0.0)
    written = []
    for event in events:
        if event.tiff is None:
            continue
        try:
            overview = read_overview(session_folder / event.tiff)
        except DataError:
            continue
        imaged = frames_in(history, event.area, frame_pixel_nm)
        png = overview_png(event, overview.image, imaged, frame_pixel_nm, session_title(history))
        path = folder / f"overview_{event.overview:04d}.png"
        path.write_bytes(png)
        written.append(path)
    return written


def overview_png(
    event: ev.OverviewTaken,
    image: np.ndarray,
    imaged: Sequence[tuple[int, Region, str]],
    frame_pixel_nm: float,
    title: str,
) -> bytes:
    """The overview ``event`` describes, drawn as a PNG: ``image`` in gray over its area,
    the picked regions dashed, the ``imaged`` ones (frame, region, status) solid and numbered.
    The one drawing shared by the export and the live view."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    area = event.area
    extent = (
        area["x_um"],
        area["x_um"] + area["width_um"],
        area["y_um"] + area["height_um"],
        area["y_um"],
    )
    vmax = float(np.percentile(image, UPPER_PERCENTILE)) or 1.0
    fig, ax = plt.subplots(figsize=(7.0, 7.4))
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=vmax, extent=extent, interpolation="nearest")

    def outline(region: Region, **style: Any) -> Any:
        size_x = region.width_px * frame_pixel_nm / 1000
        size_y = region.height_px * frame_pixel_nm / 1000
        return Rectangle((region.x_um, region.y_um), size_x, size_y, fill=False, **style)

    for data in event.regions:
        ax.add_patch(
            outline(Region.from_dict(data), edgecolor="#17becf", linestyle="--", linewidth=1.0)
        )
    for frame_no, region, status in imaged:
        colour = STATUS_COLOURS.get(status, "#ffdd00")
        ax.add_patch(outline(region, edgecolor=colour, linewidth=1.6))
        ax.text(
            region.x_um, region.y_um, f"{frame_no}", color=colour, fontsize=8,
            ha="left", va="bottom",
        )  # fmt: skip
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    dose = event.light_dose_per_pixel_uj
    settings = ", ".join(
        f"{name} {value:g}"
        for name, value in event.params_applied.items()
        if name != "depletion_mw"
    )
    ax.set_title(
        f"{title}\noverview {event.overview} (before frame "
        f"{event.before_frame}): {len(event.regions)} regions picked, "
        f"{event.in_band}/{event.candidates} fields within the bands",
        fontsize=9,
    )
    fig.text(
        0.02,
        0.01,
        f"Confocal overview, {event.pixel_size_nm or 0:g} nm pixels, {settings}"
        + (f", dose {dose:.3g} µJ/pixel" if dose is not None else "")
        + f"; gray 0–{vmax:.0f} counts (linear).\nDashed cyan: regions picked; solid: "
        "frames acquired (green told, red failed), labelled with the frame number.",
        fontsize=7.5,
        va="bottom",
    )
    fig.subplots_adjust(bottom=0.14, top=0.9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
