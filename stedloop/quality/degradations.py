"""Does a quality model rank controlled degradations of a frame the way an expert does?

Layout (as in ``../shared/data/real_sted/degradations/``): ``DIR/<frame>/<family>_<level>.tif``,
one subfolder per frame (or the files directly in ``DIR`` for one frame). Level 0 is the
original; a higher level is a worse image of the same field. Families are whatever the file
names say (``noise``, ``blur``, ``bleach``...). A series is one frame's one family.

Figures, per family and over all series:

- the share of adjacent level pairs scored in the right order (level k+1 strictly below the
  level before it);
- the ratio of the score at a series' highest level to its level-0 score, its median, and
  how many series reach ``HALF`` (the most degraded at most half of the original);
- how many series score level 0 above their highest level.

``stedloop evaluate-degradations`` is the command on top.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from stedloop.errors import DataError
from stedloop.quality.dataset import read_scorable_image
from stedloop.quality.scorer_protocol import Scorer

#: ``<family>_<level>`` once ``.tif``/``.tiff`` (and ``.ome``) are taken off the name.
LEVEL_NAME = re.compile(r"^(?P<family>.+)_(?P<level>[0-9]+)$")
TIFF_SUFFIXES = (".tif", ".tiff")
#: The issue's bar for a model that sees a degradation: the most degraded level scores at
#: most half of the original.
HALF = 0.5


@dataclass(frozen=True)
class Series:
    """One frame's images of one family, by level (sorted; the first is level 0)."""

    frame: str
    family: str
    levels: tuple[int, ...]
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class ScoredSeries:
    series: Series
    scores: tuple[float, ...]

    @property
    def n_pairs(self) -> int:
        return len(self.scores) - 1

    @property
    def pairs_in_order(self) -> int:
        return sum(b < a for a, b in pairwise(self.scores))

    @property
    def ratio(self) -> float | None:
        """Score at the highest level over the level-0 score; None when level 0 scores 0."""
        return self.scores[-1] / self.scores[0] if self.scores[0] > 0 else None

    @property
    def least_above_most(self) -> bool:
        return self.scores[0] > self.scores[-1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "frame": self.series.frame,
            "family": self.series.family,
            "levels": list(self.series.levels),
            "scores": list(self.scores),
            "pairs_in_order": self.pairs_in_order,
            "pairs": self.n_pairs,
            "ratio": self.ratio,
            "least_above_most": self.least_above_most,
        }


@dataclass(frozen=True)
class Summary:
    """The figures of a group of series (one family, or all of them)."""

    name: str
    n_series: int
    pairs_in_order: int
    n_pairs: int
    median_ratio: float | None
    n_at_most_half: int
    n_least_above_most: int

    @property
    def ordered_share(self) -> float:
        return self.pairs_in_order / self.n_pairs

    def as_dict(self) -> dict[str, Any]:
        return {
            "series": self.n_series,
            "pairs_in_order": self.pairs_in_order,
            "pairs": self.n_pairs,
            "ordered_share": self.ordered_share,
            "median_ratio": self.median_ratio,
            "at_most_half": self.n_at_most_half,
            "least_above_most": self.n_least_above_most,
        }


@dataclass
class DegradationReport:
    folder: Path
    model: str
    series: list[ScoredSeries]
    families: list[Summary]
    overall: Summary
    ignored: list[Path] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "model": self.model,
            "families": {s.name: s.as_dict() for s in self.families},
            "overall": self.overall.as_dict(),
            "series": [s.as_dict() for s in self.series],
            "ignored": [str(p) for p in self.ignored],
        }

    def text(self) -> str:
        frames = {s.series.frame for s in self.series}
        n_images = sum(len(s.scores) for s in self.series)
        lines = [
            f"model  {self.model}",
            f"folder {self.folder}: {len(frames)} frame(s), {len(self.families)} "
            f"famil{'y' if len(self.families) == 1 else 'ies'}, {len(self.series)} series, "
            f"{n_images} images",
            "",
        ]
        header = ["family", "series", "pairs in order", "share", "max/0 median"]
        header += [f"max/0 <= {HALF:g}", "level 0 > max"]
        rows = [
            [
                s.name,
                str(s.n_series),
                f"{s.pairs_in_order}/{s.n_pairs}",
                f"{s.ordered_share:.2f}",
                _number(s.median_ratio),
                f"{s.n_at_most_half}/{s.n_series}",
                f"{s.n_least_above_most}/{s.n_series}",
            ]
            for s in [*self.families, self.overall]
        ]
        lines += _table(header, rows, n_left=1)
        lines.append(
            f"(pairs in order: level k+1 scored below level k; max/0: the score at a series' "
            f"highest level over its level-0 score, the bar being <= {HALF:g})"
        )
        levels = sorted({level for s in self.series for level in s.series.levels})
        header = ["frame", "family", *map(str, levels), "max/0", "in order"]
        rows = []
        for s in self.series:
            by_level = dict(zip(s.series.levels, s.scores, strict=True))
            rows.append(
                [
                    s.series.frame,
                    s.series.family,
                    *(_number(by_level.get(level), 3) for level in levels),
                    _number(s.ratio),
                    f"{s.pairs_in_order}/{s.n_pairs}",
                ]
            )
        lines += ["", "score per series and level", *_table(header, rows, n_left=2)]
        return "\n".join(lines)


def discover_series(folder: Path) -> tuple[list[Series], list[Path]]:
    """The series under ``folder`` and the TIFFs there not named ``<family>_<level>.tif``.

    DataError for a missing or empty folder, no level files at all, a series without level
    0 or with only level 0, and two files for the same level.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    entries = sorted(folder.iterdir())
    if not entries:
        raise DataError(
            f"{folder} is empty; expected one subfolder per frame of <family>_<level>.tif"
        )
    frames = [(folder.name, folder)] + [(p.name, p) for p in entries if p.is_dir()]
    series: list[Series] = []
    ignored: list[Path] = []
    for frame, where in frames:
        found: dict[str, dict[int, Path]] = {}
        for path in sorted(p for p in where.iterdir() if p.is_file()):
            stem = _tiff_stem(path)
            if stem is None:
                continue
            match = LEVEL_NAME.match(stem)
            if match is None:
                ignored.append(path)
                continue
            family, level = match.group("family"), int(match.group("level"))
            levels = found.setdefault(family, {})
            if level in levels:
                raise DataError(
                    f"{where}: two files for {family} level {level}: "
                    f"{levels[level].name} and {path.name}"
                )
            levels[level] = path
        for family, levels in sorted(found.items()):
            order = sorted(levels)
            if order[0] != 0:
                raise DataError(
                    f"{where}: {family} has no level 0 ({family}_0.tif, the original); "
                    f"found level(s) {', '.join(map(str, order))}"
                )
            if len(order) < 2:
                raise DataError(
                    f"{where}: {family} has only level 0; a series needs at least two levels"
                )
            series.append(Series(frame, family, tuple(order), tuple(levels[k] for k in order)))
    if not series:
        raise DataError(
            f"{folder}: no <family>_<level>.tif files (e.g. noise_0.tif) in it or its subfolders"
        )
    return series, ignored


def score_series(series: Sequence[Series], scorer: Scorer) -> list[ScoredSeries]:
    """Every image read the way ``stedloop score`` reads it and scored in one batch."""
    paths = [p for s in series for p in s.paths]
    images = [read_scorable_image(p).image for p in paths]
    scores = [float(x) for x in scorer.score(images, names=[str(p) for p in paths])]
    out, start = [], 0
    for s in series:
        out.append(ScoredSeries(s, tuple(scores[start : start + len(s.paths)])))
        start += len(s.paths)
    return out


def summarise(name: str, scored: Sequence[ScoredSeries]) -> Summary:
    ratios = [s.ratio for s in scored if s.ratio is not None]
    return Summary(
        name=name,
        n_series=len(scored),
        pairs_in_order=sum(s.pairs_in_order for s in scored),
        n_pairs=sum(s.n_pairs for s in scored),
        median_ratio=float(np.median(ratios)) if ratios else None,
        n_at_most_half=sum(r <= HALF for r in ratios),
        n_least_above_most=sum(s.least_above_most for s in scored),
    )


def evaluate_degradations(folder: Path, scorer: Scorer, model: str) -> DegradationReport:
    series, ignored = discover_series(folder)
    scored = score_series(series, scorer)
    families = sorted({s.family for s in series})
    return DegradationReport(
        folder=Path(folder),
        model=model,
        series=scored,
        families=[summarise(f, [s for s in scored if s.series.family == f]) for f in families],
        overall=summarise("all", scored),
        ignored=ignored,
    )


def write_csv(report: DegradationReport, path: Path) -> Path:
    """One row per image: frame, family, level, score and the path relative to the folder."""
    with Path(path).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["frame", "family", "level", "score", "path"])
        for s in report.series:
            for level, score, image in zip(s.series.levels, s.scores, s.series.paths, strict=True):
                rel = (
                    image.relative_to(report.folder)
                    if image.is_relative_to(report.folder)
                    else image
                )
                writer.writerow([s.series.frame, s.series.family, level, f"{score:.6f}", rel])
    return Path(path)


def write_plot(report: DegradationReport, path: Path) -> Path:
    """One panel per family: score against level, one line per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(report.families)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.8), squeeze=False, sharey=True)
    for ax, family in zip(axes[0], report.families, strict=True):
        for s in (s for s in report.series if s.series.family == family.name):
            ax.plot(s.series.levels, s.scores, marker="o", label=s.series.frame)
        ax.set_title(
            f"{family.name}: {family.pairs_in_order}/{family.n_pairs} pairs in order, "
            f"median max/0 {_number(family.median_ratio)}",
            fontsize=9,
        )
        ax.set_xlabel("degradation level (0 = original)")
        ax.set_xticks(sorted({lv for s in report.series for lv in s.series.levels}))
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        if family.n_series <= 12:  # more would hide the lines
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel("quality score")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _tiff_stem(path: Path) -> str | None:
    """The name without ``.tif``/``.tiff`` (and ``.ome`` before it); None if not a TIFF."""
    if path.suffix.lower() not in TIFF_SUFFIXES or path.name.startswith("."):
        return None
    stem = path.name[: -len(path.suffix)]
    return stem[:-4] if stem.lower().endswith(".ome") else stem


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]], n_left: int) -> list[str]:
    """Plain-text columns: the first ``n_left`` left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < n_left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), *map(line, rows)]
