"""PNG plots of a session: score vs frame, parameter traces, and (with two or more objectives)
the Pareto front. Each is titled with the session id (and name) and marks the best frame."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stedloop.params import PARAM_NAMES, PARAM_UNITS
from stedloop.store.export import objective_directions, objective_units, session_pareto
from stedloop.store.history import SessionHistory

#: How far beyond the 10th-90th percentile range an axis reaches (in units of that range)
#: before a value is drawn at the edge as an outlier.
OUTLIER_REACH = 1.0
#: Outliers labelled with their values (more would clutter the edge).
MAX_OUTLIER_LABELS = 5


def session_title(history: SessionHistory) -> str:
    name = history.created.get("name")
    return f"session {history.created.get('id')}" + (f" ({name})" if name else "")


def axis_label(name: str, unit: str, direction: str) -> str:
    """``resolution (nm, lower is better)``."""
    better = "lower is better" if direction == "minimize" else "higher is better"
    return f"{name} ({unit}, {better})" if unit else f"{name} ({better})"


def robust_limits(values: Sequence[float]) -> tuple[float, float]:
    """Axis limits that hold the bulk of ``values`` and leave far outliers out.

    The 10th-90th percentile range widened by ``OUTLIER_REACH`` times itself on each side,
    never wider than the data; padded by 5 % of the span."""
    data = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if data.size == 0:
        return 0.0, 1.0
    p10, p90 = (float(v) for v in np.percentile(data, [10, 90]))
    reach = OUTLIER_REACH * (p90 - p10)
    low = max(float(data.min()), p10 - reach)
    high = min(float(data.max()), p90 + reach)
    pad = 0.05 * (high - low) or 0.05 * max(abs(high), 1e-9)
    return low - pad, high + pad


def write_plots(history: SessionHistory, folder: Path) -> list[Path]:
    """Write the session's plots into ``folder``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed on an acquisition PC or in CI
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    frames = history.done_frames()
    told = [f for f in frames if f.status == "told"]
    best = history.best()
    title = session_title(history)
    written = []

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [f.frame for f in told]
    # A told frame without a combined value (all objectives failed) is a gap: NaN.
    ys = [math.nan if f.combined is None else f.combined for f in told]
    best_so_far: list[float] = []
    running = float("-inf")
    for y in ys:
        if not math.isnan(y):
            running = max(running, y)
        best_so_far.append(running)
    ax.plot(xs, ys, "o", label="combined score")
    ax.step(xs, best_so_far, where="post", label="best so far")
    if best is not None and best.combined is not None:
        ax.plot(
            [best.frame], [best.combined], "*", ms=16, color="C3", label=f"best: frame {best.frame}"
        )
    failed = [f.frame for f in frames if f.status == "failed"]
    if failed:
        lowest = min((y for y in ys if not math.isnan(y)), default=0.0)
        ax.plot(failed, [lowest] * len(failed), "x", color="red", label="failed")
    ax.set_xlabel("frame")
    ax.set_ylabel("combined score (higher is better)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, folder / "score_vs_frame.png"))

    fig, axes = plt.subplots(len(PARAM_NAMES), 1, figsize=(7, 6), sharex=True)
    for ax, name in zip(axes, PARAM_NAMES, strict=True):
        ax.plot([f.frame for f in frames], [f.params[name] for f in frames], ".-")
        if best is not None:
            ax.plot([best.frame], [best.params[name]], "*", ms=14, color="C3")
        ax.set_ylabel(f"{name}\n({PARAM_UNITS[name]})")
    axes[0].set_title(title + ("" if best is None else f"; ★ best frame {best.frame}"))
    axes[-1].set_xlabel("frame")
    fig.tight_layout()
    written.append(_save(fig, folder / "parameter_traces.png"))

    # With one objective the "front" is the best value, already in score_vs_frame.png.
    if len(objective_directions(history)) >= 2:
        written.append(_pareto_plot(plt, history, folder / "pareto_front.png"))
    return written


def _pareto_plot(plt: Any, history: SessionHistory, path: Path) -> Path:
    directions = objective_directions(history)
    units = objective_units(history)
    names = list(directions)
    frames = history.done_frames()
    scored = [f for f in frames if f.values and all(f.values.get(n) is not None for n in names)]
    front = {f.frame for f in session_pareto(history)}
    best = history.best()
    pairs = list(itertools.combinations(names, 2))
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4.5), squeeze=False)
    for ax, (a, b) in zip(axes[0], pairs, strict=True):
        xs = [float(f.values[a] or 0.0) for f in scored]
        ys = [float(f.values[b] or 0.0) for f in scored]
        (x0, x1), (y0, y1) = robust_limits(xs), robust_limits(ys)
        inside = [x0 <= x <= x1 and y0 <= y <= y1 for x, y in zip(xs, ys, strict=True)]
        on = [f.frame in front for f in scored]
        for keep, style in (
            (False, dict(alpha=0.4, label="frames")),
            (True, dict(color="C3", label="Pareto front")),
        ):
            pts = [(x, y) for x, y, i, o in zip(xs, ys, inside, on, strict=True) if i and o == keep]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", **style)
        outside = [
            (min(max(x, x0), x1), min(max(y, y0), y1), o, f"{x:.4g}, {y:.4g}")
            for x, y, i, o in zip(xs, ys, inside, on, strict=True)
            if not i
        ]
        if outside:  # drawn on the edge, so one far-off value does not squash the rest
            ax.scatter(
                [p[0] for p in outside],
                [p[1] for p in outside],
                marker="D",
                facecolors="none",
                edgecolors=["C3" if p[2] else "C0" for p in outside],
                label=f"outside the axes ({len(outside)}), drawn at the edge",
                clip_on=False,
                zorder=3,
            )
            for px, py, _, value in outside[:MAX_OUTLIER_LABELS]:  # its true value beside it
                ax.annotate(
                    value, (px, py), xytext=(-4, 4), textcoords="offset points", ha="right",
                    fontsize="x-small", annotation_clip=False,
                )  # fmt: skip
        if best is not None and best.frame in {f.frame for f in scored}:
            bx = min(max(float(best.values[a] or 0.0), x0), x1)
            by = min(max(float(best.values[b] or 0.0), y0), y1)
            ax.plot(
                [bx],
                [by],
                "o",
                ms=15,
                mfc="none",
                mec="k",
                mew=1.5,
                label=f"best (combined score): frame {best.frame}",
                clip_on=False,
                zorder=4,
            )
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_xlabel(axis_label(a, units.get(a, ""), directions[a]))
        ax.set_ylabel(axis_label(b, units.get(b, ""), directions[b]))
        ax.legend(fontsize="small")
    fig.suptitle(session_title(history))
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
