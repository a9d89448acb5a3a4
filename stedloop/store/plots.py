"""PNG plots of a session: objective vs frame, parameter traces, Pareto front."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from stedloop.params import PARAM_NAMES, PARAM_UNITS
from stedloop.store.export import objective_directions, session_pareto
from stedloop.store.history import SessionHistory


def write_plots(history: SessionHistory, folder: Path) -> list[Path]:
    """Write the session's plots into ``folder``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed on an acquisition PC or in CI
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    frames = history.done_frames()
    told = [f for f in frames if f.status == "told"]
    written = []

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [f.frame for f in told]
    # A told frame without a combined value (all objectives failed) is a gap: NaN.
    ys = [math.nan if f.combined is None else f.combined for f in told]
    best: list[float] = []
    running = float("-inf")
    for y in ys:
        if not math.isnan(y):
            running = max(running, y)
        best.append(running)
    ax.plot(xs, ys, "o", label="combined objective")
    ax.step(xs, best, where="post", label="best so far")
    failed = [f.frame for f in frames if f.status == "failed"]
    if failed:
        lowest = min((y for y in ys if not math.isnan(y)), default=0.0)
        ax.plot(failed, [lowest] * len(failed), "x", color="red", label="failed")
    ax.set_xlabel("frame")
    ax.set_ylabel("combined objective")
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, folder / "objective_vs_frame.png"))

    fig, axes = plt.subplots(len(PARAM_NAMES), 1, figsize=(7, 6), sharex=True)
    for ax, name in zip(axes, PARAM_NAMES, strict=True):
        ax.plot([f.frame for f in frames], [f.params[name] for f in frames], ".-")
        ax.set_ylabel(f"{name}\n({PARAM_UNITS[name]})")
    axes[-1].set_xlabel("frame")
    fig.tight_layout()
    written.append(_save(fig, folder / "parameter_traces.png"))

    directions = objective_directions(history)
    names = list(directions)
    scored = [f for f in frames if f.values and all(f.values.get(n) is not None for n in names)]
    front = {f.frame for f in session_pareto(history)}
    pairs: list[tuple[str, str | None]] = (
        list(itertools.combinations(names, 2)) or [(names[0], None)] if names else []
    )
    fig, axes = plt.subplots(
        1, max(1, len(pairs)), figsize=(5 * max(1, len(pairs)), 4), squeeze=False
    )
    for ax, (a, b) in zip(axes[0], pairs, strict=False):
        if b is None:  # one objective: its values by frame, the front being the best
            ax.plot([f.frame for f in scored], [f.values[a] for f in scored], "o")
            ax.set_xlabel("frame")
            ax.set_ylabel(a)
            continue
        on = [f for f in scored if f.frame in front]
        off = [f for f in scored if f.frame not in front]
        ax.plot(
            [f.values[a] for f in off], [f.values[b] for f in off], "o", alpha=0.4, label="frames"
        )
        ax.plot(
            [f.values[a] for f in on],
            [f.values[b] for f in on],
            "o",
            color="C3",
            label="Pareto front",
        )
        ax.set_xlabel(f"{a} ({directions[a]})")
        ax.set_ylabel(f"{b} ({directions[b]})")
        ax.legend()
    fig.tight_layout()
    written.append(_save(fig, folder / "pareto_front.png"))
    return written


def _save(fig: object, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path
