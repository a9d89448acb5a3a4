"""The sweep's table: per objective x sample x optimizer setting, frames to a share of the
best achievable value, the best within the budget, and the decision time.

Everything but the two decision-time columns is a function of the jobs' judged values, so a
sweep gives the same table in-process and on Ray; decision times are measured wall time.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stedloop.sweep.plan import SweepResults

THRESHOLDS = (0.95, 0.99)
#: The columns that are measured time, not results (they differ between runs).
TIME_COLUMNS = ("decision_ms_median", "decision_ms_p90")
TABLE_NAME = "sweep.csv"
FRAMES_NAME = "sweep_frames.csv"


def frames_to(values: Sequence[float], threshold: float) -> int | None:
    """The first frame count (1-based) whose value reaches ``threshold``; None if none."""
    for k, value in enumerate(values, start=1):
        if value >= threshold:
            return k
    return None


def summarise(
    name: str,
    runs: list[list[float]],
    best: float,
    budget: int,
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict[str, object]:
    """Median frames to each share of ``best`` (inf when a seed never reached it), how many
    seeds reached it within the budget, and the median best value within the budget / best."""
    row: dict[str, object] = {"name": name, "seeds": len(runs)}
    for fraction in thresholds:
        reached = [frames_to(r, fraction * best) for r in runs]
        row[f"median_{fraction}"] = statistics.median(
            [k if k is not None else float("inf") for k in reached]
        )
        row[f"reached_{fraction}"] = sum(k is not None and k <= budget for k in reached)
    row["best_within_budget"] = statistics.median([max(r[:budget]) / best for r in runs])
    return row


def table_rows(results: SweepResults) -> list[dict[str, str]]:
    """One row per group, in the sweep file's order; values as they are written."""
    spec = results.spec
    budget, fraction = spec.budget_frames, spec.threshold
    share = f"{100 * fraction:g}pc"
    rows = []
    for (objective, sample, setting), runs in results.runs.items():
        best = results.best[(objective, sample)]
        summary = summarise(setting, [r.judged for _, r in runs], best, budget, (fraction,))
        median = summary[f"median_{fraction}"]
        assert isinstance(median, (int, float))
        decisions_ms = [1e3 * t for _, r in runs for t in r.decision_s]
        rows.append(
            {
                "objective": objective,
                "sample": sample,
                "setting": setting,
                "space": spec.settings[setting].space,
                "seeds": str(len(runs)),
                "budget_frames": str(budget),
                "best_achievable": f"{best:.6g}",
                f"frames_to_{share}_median": f"{median:g}"
                if median != float("inf")
                else f">{budget}",
                f"reached_{share}": f"{summary[f'reached_{fraction}']}/{len(runs)}",
                "best_within_budget_share": f"{summary['best_within_budget']:.6g}",
                "decision_ms_median": f"{statistics.median(decisions_ms):.1f}",
                "decision_ms_p90": f"{float(np.percentile(decisions_ms, 90)):.1f}",
            }
        )
    return rows


def to_csv(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def frame_rows(results: SweepResults) -> list[dict[str, str]]:
    """Every frame of every session: its judged and observed values and decision time."""
    rows = []
    for (objective, sample, setting), runs in results.runs.items():
        for seed, run in runs:
            for frame, (judged, observed, decision_s) in enumerate(
                zip(run.judged, run.observed, run.decision_s, strict=True)
            ):
                rows.append(
                    {
                        "objective": objective,
                        "sample": sample,
                        "setting": setting,
                        "seed": str(seed),
                        "frame": str(frame),
                        "judged": repr(judged),
                        "observed": repr(observed),
                        "decision_ms": f"{1e3 * decision_s:.2f}",
                    }
                )
    return rows


def write_tables(results: SweepResults, folder: Path) -> tuple[Path, Path]:
    table, frames = folder / TABLE_NAME, folder / FRAMES_NAME
    table.write_text(to_csv(table_rows(results)), encoding="utf-8")
    frames.write_text(to_csv(frame_rows(results)), encoding="utf-8")
    return table, frames


def format_table(rows: list[dict[str, str]]) -> str:
    """The table as aligned text for the terminal."""
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
