"""The paper's user-study metrics (eq. 1–5): counts per target-score bin, confusion, domination.

A tester sees an image with two scores, the expert's target and the network's prediction, in
random order, and picks one, calls them equivalent, or discards the image. Per bin of target
score we count N (shown), Ñ (kept = not discarded), T, P, E (target / prediction / equivalent
picked; T + P + E = Ñ). Confusion C = 1 − |(2P + E) − Ñ| / Ñ is 1 when the tester cannot tell
the two apart; domination D = P / (T + P) is the share of decided trials the network won.
Cells that are undefined (Ñ = 0, or T + P = 0) are ``None``: a report shows them as "–".

A module of its own, below both users: ``stedloop.quality`` scores simulated testers with it,
``stedloop.study`` the people of the web study; neither package imports the other.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from stedloop.errors import DataError

#: Target-score bin edges: 0–0.2, 0.2–0.4, 0.4–0.6, 0.6–0.8, 0.8–1.0 (1.0 falls in the last).
BIN_EDGES: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
N_BINS = len(BIN_EDGES) - 1

Choice = Literal["target", "prediction", "equivalent", "discard"]
CHOICES: tuple[str, ...] = get_args(Choice)


def bin_label(index: int) -> str:
    """Human label of bin ``index``, e.g. ``"0.2–0.4"``."""
    return f"{BIN_EDGES[index]:.1f}–{BIN_EDGES[index + 1]:.1f}"


def bin_of(score: float) -> int:
    """Index of the bin holding ``score`` (left edge inclusive; 1.0 goes to the last bin).

    Uses the edges themselves, not ``int(score / 0.2)``, so 0.6 lands in 0.6–0.8 and not,
    through floating-point rounding (0.6 / 0.2 = 2.999…), in 0.4–0.6.
    """
    value = float(score)
    if not math.isfinite(value) or value < BIN_EDGES[0] or value > BIN_EDGES[-1]:
        raise DataError(f"score {score!r} is outside [0, 1]")
    return min(bisect.bisect_right(BIN_EDGES, value) - 1, N_BINS - 1)


@dataclass
class BinCounts:
    """Counts of one tester (or pooled testers) in one target bin."""

    shown: int = 0  # N
    kept: int = 0  # Ñ = N − discarded
    target: int = 0  # T
    prediction: int = 0  # P
    equivalent: int = 0  # E

    def add(self, choice: Choice) -> None:
        """Count one answer."""
        if choice not in CHOICES:
            raise DataError(f"unknown choice {choice!r}; expected one of {', '.join(CHOICES)}")
        self.shown += 1
        if choice == "discard":
            return
        self.kept += 1
        if choice == "target":
            self.target += 1
        elif choice == "prediction":
            self.prediction += 1
        else:
            self.equivalent += 1

    @property
    def discarded(self) -> int:
        return self.shown - self.kept


def confusion(c: BinCounts) -> float | None:
    """C = 1 − |(2P + E) − Ñ| / Ñ; None when Ñ = 0."""
    if c.kept == 0:
        return None
    return 1.0 - abs((2 * c.prediction + c.equivalent) - c.kept) / c.kept


def domination(c: BinCounts) -> float | None:
    """D = P / (T + P); None when T + P = 0."""
    decided = c.target + c.prediction
    if decided == 0:
        return None
    return c.prediction / decided


def tally(trials: Iterable[tuple[float, Choice]]) -> list[BinCounts]:
    """Counts per target bin from ``(target_score, choice)`` pairs; always ``N_BINS`` entries."""
    bins = [BinCounts() for _ in range(N_BINS)]
    for target_score, choice in trials:
        bins[bin_of(target_score)].add(choice)
    return bins


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and population std of the defined values, and how many there were.

    Population std (ddof=0) so one tester gives std 0 rather than undefined; returns
    ``(None, None, 0)`` when no value is defined.
    """
    defined = [float(v) for v in values if v is not None]
    if not defined:
        return None, None, 0
    return statistics.fmean(defined), statistics.pstdev(defined), len(defined)
