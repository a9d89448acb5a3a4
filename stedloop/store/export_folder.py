"""A session's export folder: what leaves the session folder for a lab notebook or a colleague.

```
frames.csv            one row per frame: parameters, objective values with units, times, paths
summary.json          state, best point, Pareto front
frames/NNNN.ome.tif   copies of the frame files whose OME MapAnnotation also holds the scores
*.png                 plots and the best frame beside the session's first (``--plots``);
                      overview_NNNN.png: each overview with its picked and imaged regions
```

The session's own frame files are written once, before they are scored, so they cannot carry
their scores; the export writes annotated copies instead (rewritten on every export: they are
derived from the ledger, which stays the truth). The CSV's ``tiff`` column points at these
copies, relative to the CSV, so the folder can be moved or zipped whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from stedloop.errors import DataError
from stedloop.store.export import objective_units, summary, write_frames_csv
from stedloop.store.frames import FRAME_SUFFIX, read_frame
from stedloop.store.history import FrameRecord, SessionHistory
from stedloop.tiffio import write_frame_tiff

FRAMES_FOLDER = "frames"


def export_session(
    history: SessionHistory,
    session_folder: Path,
    folder: Path,
    *,
    plots: bool = True,
    frames: bool = True,
) -> list[Path]:
    """Write the export of the session in ``session_folder`` into ``folder``; the files.

    Without ``frames`` no copies are written and the CSV points at the session's own files
    (still relative to the CSV, so valid while both folders keep their places)."""
    folder.mkdir(parents=True, exist_ok=True)
    if frames:
        copies = write_annotated_frames(history, session_folder, folder / FRAMES_FOLDER)
        relative = {n: path.relative_to(folder).as_posix() for n, path in copies.items()}
    else:
        copies = {}
        relative = {
            f.frame: Path(os.path.relpath(session_folder / f.tiff, folder)).as_posix()
            for f in history.done_frames()
            if f.tiff is not None and (session_folder / f.tiff).is_file()
        }
    written = [write_frames_csv(history, folder / "frames.csv", relative)]
    (folder / "summary.json").write_text(json.dumps(summary(history), indent=2, default=str))
    written.append(folder / "summary.json")
    if plots:
        from stedloop.store.figures import write_best_frame_figure
        from stedloop.store.plots import write_plots

        written.extend(write_plots(history, folder))
        figure = write_best_frame_figure(history, session_folder, folder)
        if figure is not None:
            written.append(figure)
        from stedloop.store.overview_figures import write_overview_figures

        written.extend(write_overview_figures(history, session_folder, folder))
    written.extend(copies.values())
    return written


def score_annotations(history: SessionHistory, record: FrameRecord) -> dict[str, str]:
    """The key/value pairs a frame's exported copy carries: its judgement and where from."""
    pairs = {"stedloop session": str(history.created.get("id")), "frame": str(record.frame)}
    if history.created.get("name"):
        pairs["session name"] = str(history.created["name"])
    pairs["status"] = record.status
    for name, unit in objective_units(history).items():
        value = record.values.get(name)
        label = f"{name} ({unit})" if unit else name
        pairs[label] = "failed" if value is None else f"{value:.6g}"
    pairs["combined score"] = "none" if record.combined is None else f"{record.combined:.6g}"
    return pairs


def write_annotated_frames(
    history: SessionHistory, session_folder: Path, folder: Path
) -> dict[int, Path]:
    """A copy of each recorded frame file in ``folder``, its scores in the MapAnnotation.

    A frame whose file is missing or unreadable is left out (the CSV then gives no path)."""
    folder.mkdir(parents=True, exist_ok=True)
    copies: dict[int, Path] = {}
    for record in history.done_frames():
        if record.tiff is None:
            continue
        try:
            frame = read_frame(session_folder / record.tiff)
        except DataError:
            continue
        metadata = dict(frame.metadata)
        extra = metadata.pop("extra", {})
        target = folder / f"{record.frame:04d}{FRAME_SUFFIX}"
        copies[record.frame] = write_frame_tiff(
            target,
            replace(frame, metadata=metadata),
            extra_metadata=extra,
            overwrite=True,
            annotations=score_annotations(history, record),
        )
    return copies
