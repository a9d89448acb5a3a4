"""The figure for a lab meeting: the session's best frame beside a frame from its start.

Two rows (the start frame, the best frame), two columns (confocal, STED), a scale bar from the
frame's pixel size, each row's settings and scores, and a caption that states the display
contrast: within a channel both frames share one linear range, so brightness compares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stedloop.errors import DataError
from stedloop.frame import Frame
from stedloop.params import PARAM_LABELS, PARAM_NAMES, PARAM_UNITS
from stedloop.store.export import objective_units
from stedloop.store.frames import read_frame
from stedloop.store.history import FrameRecord, SessionHistory
from stedloop.store.plots import session_title

FIGURE_NAME = "best_frame.png"
#: Channels shown, and the frame attribute each comes from.
CHANNELS = (("confocal", "confocal_before"), ("STED", "sted"))
#: Display range per channel: 0 counts to this percentile of both frames' pixels together.
UPPER_PERCENTILE = 99.5
#: Scale-bar lengths to pick from (µm): the longest that fits in a fifth of the field.
SCALE_BARS_UM = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def start_and_best(history: SessionHistory) -> tuple[FrameRecord, FrameRecord] | None:
    """The session's first told frame with a file (frame 0 if it has one) and its best frame."""
    best = history.best()
    told = [f for f in history.told_frames() if f.tiff is not None]
    if best is None or best.tiff is None or not told:
        return None
    return told[0], best


def scale_bar_um(field_um: float) -> float:
    fitting = [length for length in SCALE_BARS_UM if length <= field_um / 5]
    return fitting[-1] if fitting else SCALE_BARS_UM[0]


def write_best_frame_figure(
    history: SessionHistory, session_folder: Path, folder: Path
) -> Path | None:
    """Write ``best_frame.png`` into ``folder``; None when no told frame has a readable file."""
    chosen = start_and_best(history)
    if chosen is None:
        return None
    records = [chosen[0]] if chosen[0].frame == chosen[1].frame else list(chosen)
    try:
        frames = [read_frame(session_folder / str(r.tiff)) for r in records]
    except DataError:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limits = {
        attr: float(
            np.percentile(
                np.concatenate([getattr(f, attr).ravel() for f in frames]), UPPER_PERCENTILE
            )
        )
        or 1.0
        for _, attr in CHANNELS
    }
    rows = len(records)
    # Laid out by hand (inches): tight_layout would shrink the images to fit the text lines.
    image_in, margin_in, gap_in, top_in, caption_in = 3.4, 0.15, 0.2, 0.5, 0.55
    row_in = 0.3 + image_in + 0.6  # panel titles, images, settings and scores
    width_in = 2 * margin_in + 2 * image_in + gap_in
    height_in = top_in + rows * row_in + caption_in
    fig = plt.figure(figsize=(width_in, height_in))
    for row, (record, frame) in enumerate(zip(records, frames, strict=True)):
        role = "best" if record.frame == chosen[1].frame else "start of the session"
        if rows == 1:
            role = "start and best"
        bottom_in = height_in - top_in - row * row_in - 0.3 - image_in
        axes = []
        for col, (label, attr) in enumerate(CHANNELS):
            left_in = margin_in + col * (image_in + gap_in)
            ax = fig.add_axes(
                (
                    left_in / width_in,
                    bottom_in / height_in,
                    image_in / width_in,
                    image_in / height_in,
                )
            )
            ax.imshow(getattr(frame, attr), cmap="gray", vmin=0.0, vmax=limits[attr])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"frame {record.frame} ({role}): {label}", fontsize=10)
            _scale_bar(ax, frame)
            axes.append(ax)
        axes[0].text(
            0.0,
            -0.03,
            _settings_line(history, record),
            transform=axes[0].transAxes,
            va="top",
            fontsize=8.5,
        )
    fig.suptitle(session_title(history), y=1 - 0.15 / height_in, va="top")
    ranges = ", ".join(f"{label} 0–{limits[attr]:.0f}" for label, attr in CHANNELS)
    fig.text(
        margin_in / width_in,
        0.1 / height_in,
        f"Raw counts, gray, linear. Within a channel both frames share one display range: 0 to\n"
        f"the {UPPER_PERCENTILE:g}th percentile of their pixels together ({ranges} counts).\n"
        f"Confocal: the image taken before the STED image.",
        fontsize=8,
        va="bottom",
    )
    path = folder / FIGURE_NAME
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _settings_line(history: SessionHistory, record: FrameRecord) -> str:
    settings = ", ".join(
        f"{PARAM_LABELS[name]} {record.params[name]:.3g} {PARAM_UNITS[name]}"
        for name in PARAM_NAMES
    )
    scores = [
        f"{name} {record.values[name]:.3g}{f' {unit}' if unit and unit != 'score' else ''}"
        for name, unit in objective_units(history).items()
        if record.values.get(name) is not None
    ]
    combined = "none" if record.combined is None else f"{record.combined:.3g}"
    return f"{settings}\n{'; '.join(scores)}; combined score {combined}"


def _scale_bar(ax: Any, frame: Frame) -> None:
    height, width = frame.shape
    pixel_um = frame.pixel_size_nm / 1000.0
    length_um = scale_bar_um(width * pixel_um)
    length_px = length_um / pixel_um
    x0, y0 = width * 0.95 - length_px, height * 0.93
    from matplotlib import patheffects

    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]  # visible on white
    ax.plot(
        [x0, x0 + length_px], [y0, y0], color="white", lw=4, solid_capstyle="butt",
        path_effects=[patheffects.withStroke(linewidth=6, foreground="black")],
    )  # fmt: skip
    text = f"{length_um:g} µm" if length_um >= 1 else f"{length_um * 1000:g} nm"
    ax.text(
        x0 + length_px / 2, y0 - height * 0.03, text, color="white", ha="center", va="bottom",
        fontsize=9, path_effects=outline,
    )  # fmt: skip
