"""The study report: per tester and target bin Ñ, T, P, E, confusion and domination, then the
mean ± std over testers, as the paper's Tables 1–2 and Figures 8–9 (HTML, PNG, CSV, JSON).

Columns are one per (structure, system), like the paper's Actin/Tubulin × Network/Random.
Metrics are computed per tester and then averaged (paper, Results); a cell with no defined
value for any tester (Ñ = 0, or T + P = 0 for domination) shows "–". The stacked bars show the
counts pooled over testers (or one named tester's, as the paper's figures do).
"""

from __future__ import annotations

import csv
import html
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stedloop.errors import DataError
from stedloop.metrics import (
    N_BINS,
    BinCounts,
    bin_label,
    confusion,
    domination,
    mean_std,
    tally,
)
from stedloop.study.store import AnswerRecord

DASH = "–"
SYSTEM_ORDER = ("network", "random")


@dataclass
class Stat:
    mean: float | None
    std: float | None
    n: int  # testers with a defined value

    def text(self) -> str:
        if self.mean is None or self.std is None:
            return DASH
        return f"{self.mean:.2f} ± {self.std:.2f}"


@dataclass
class Group:
    """One column of the tables: a structure and a scoring system."""

    structure: str
    system: str
    per_tester: dict[str, list[BinCounts]] = field(default_factory=dict)

    @property
    def testers(self) -> list[str]:
        return sorted(self.per_tester)

    def metric(self, name: str, bin_index: int) -> Stat:
        fn = confusion if name == "confusion" else domination
        values = [fn(bins[bin_index]) for bins in self.per_tester.values()]
        return Stat(*mean_std(values))

    def pooled(self, tester: str | None = None) -> list[BinCounts]:
        """Counts summed over testers (or one tester's counts)."""
        if tester is not None:
            if tester not in self.per_tester:
                raise DataError(f"no answers from tester {tester!r} for {self.title}")
            return self.per_tester[tester]
        total = [BinCounts() for _ in range(N_BINS)]
        for bins in self.per_tester.values():
            for acc, c in zip(total, bins, strict=True):
                acc.shown += c.shown
                acc.kept += c.kept
                acc.target += c.target
                acc.prediction += c.prediction
                acc.equivalent += c.equivalent
        return total

    @property
    def title(self) -> str:
        return f"{self.structure} / {self.system}"


@dataclass
class StudyReport:
    groups: list[Group]
    testers: list[str]
    answers: int

    @property
    def structures(self) -> list[str]:
        return sorted({g.structure for g in self.groups})

    def group(self, structure: str, system: str) -> Group | None:
        for g in self.groups:
            if g.structure == structure and g.system == system:
                return g
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"testers": self.testers, "answers": self.answers, "groups": []}
        for g in self.groups:
            out["groups"].append(
                {
                    "structure": g.structure,
                    "system": g.system,
                    "bins": [
                        {
                            "bin": bin_label(b),
                            "confusion": asdict(g.metric("confusion", b)),
                            "domination": asdict(g.metric("domination", b)),
                            "pooled": asdict(g.pooled()[b]),
                        }
                        for b in range(N_BINS)
                    ],
                    "per_tester": {
                        t: [
                            {
                                **asdict(c),
                                "confusion": confusion(c),
                                "domination": domination(c),
                            }
                            for c in g.per_tester[t]
                        ]
                        for t in g.testers
                    },
                }
            )
        return out


def build_report(answers: Sequence[AnswerRecord]) -> StudyReport:
    """Group answers by (structure, system, tester) and tally them per target bin."""
    by_key: dict[tuple[str, str], dict[str, list[tuple[float, str]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for a in answers:
        by_key[(a.structure, a.system)][a.tester].append((a.target, a.choice))
    groups = []
    for (structure, system), per_tester in by_key.items():
        group = Group(structure, system)
        for tester, trials in per_tester.items():
            group.per_tester[tester] = tally(trials)  # type: ignore[arg-type]
        groups.append(group)
    order = {s: i for i, s in enumerate(SYSTEM_ORDER)}
    groups.sort(key=lambda g: (g.structure, order.get(g.system, 99), g.system))
    testers = sorted({a.tester for a in answers})
    return StudyReport(groups=groups, testers=testers, answers=len(answers))


# -- tables ---------------------------------------------------------------------------------
def _columns(report: StudyReport) -> list[tuple[str, list[str]]]:
    """(structure, systems present) in display order."""
    cols = []
    for structure in report.structures:
        systems = [g.system for g in report.groups if g.structure == structure]
        cols.append((structure, systems))
    return cols


def table_cells(
    report: StudyReport, metric: str
) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Header, rows of text cells and which cells to bold (the better system per bin)."""
    header = ["Target"]
    for structure, systems in _columns(report):
        header += [f"{structure.capitalize()} {s.capitalize()}" for s in systems]
    rows: list[list[str]] = []
    bold: list[list[bool]] = []
    for b in range(N_BINS):
        row = [bin_label(b)]
        row_bold = [False]
        for structure, systems in _columns(report):
            stats = [report.group(structure, s).metric(metric, b) for s in systems]  # type: ignore[union-attr]
            means = [round(st.mean, 2) for st in stats if st.mean is not None]
            best = max(means) if len(means) > 1 else None
            for st in stats:
                row.append(st.text())
                row_bold.append(
                    best is not None and st.mean is not None and round(st.mean, 2) == best
                )
        rows.append(row)
        bold.append(row_bold)
    return header, rows, bold


def _html_table(
    caption: str, header: list[str], rows: list[list[str]], bold: list[list[bool]]
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row, row_bold in zip(rows, bold, strict=True):
        cells = []
        for text, is_bold in zip(row, row_bold, strict=True):
            t = html.escape(text)
            cells.append(f"<td><b>{t}</b></td>" if is_bold else f"<td>{t}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _detail_table(group: Group) -> str:
    header = ["Tester", "Target", "N", "Ñ", "T", "P", "E", "Confusion", "Domination"]
    rows = []
    for tester in group.testers:
        for b, c in enumerate(group.per_tester[tester]):
            conf, dom = confusion(c), domination(c)
            rows.append(
                [
                    tester,
                    bin_label(b),
                    str(c.shown),
                    str(c.kept),
                    str(c.target),
                    str(c.prediction),
                    str(c.equivalent),
                    DASH if conf is None else f"{conf:.2f}",
                    DASH if dom is None else f"{dom:.2f}",
                ]
            )
    return _html_table(
        f"Per tester: {group.title}", header, rows, [[False] * len(header) for _ in rows]
    )


# -- figures --------------------------------------------------------------------------------
def _table_png(
    path: Path, title: str, header: list[str], rows: list[list[str]], bold: list[list[bool]]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.9 * len(header) + 0.5, 0.3 * (len(rows) + 1) + 0.3))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, loc="upper center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.scale(1, 1.4)
    for (r, c), cell in table.get_celld().items():
        if r == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#e8edf3")
        elif bold[r - 1][c]:
            cell.set_text_props(weight="bold")
    ax.set_title(title, fontsize=11, pad=4)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)


def _choices_png(path: Path, report: StudyReport, structure: str, tester: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = [g for g in report.groups if g.structure == structure]
    fig, axes = plt.subplots(
        1, len(groups), figsize=(4.6 * len(groups), 3.9), squeeze=False, sharey=True
    )
    labels = [bin_label(b) for b in range(N_BINS)]
    x = np.arange(N_BINS)
    colours = {"T": "#4c72b0", "P": "#dd8452", "E": "#55a868"}
    for letter_index, (ax, group) in enumerate(zip(axes[0], groups, strict=True)):
        counts = group.pooled(tester if tester in group.per_tester else None)
        t = np.array([c.target for c in counts])
        p = np.array([c.prediction for c in counts])
        e = np.array([c.equivalent for c in counts])
        ax.bar(x, t, color=colours["T"], label="T (target picked)")
        ax.bar(x, p, bottom=t, color=colours["P"], label="P (prediction picked)")
        ax.bar(x, e, bottom=t + p, color=colours["E"], label="E (equivalent)")
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_xlabel("target quality score")
        ax.set_ylabel("images")
        ax.set_title(f"({chr(ord('a') + letter_index)}) {group.system.capitalize()}")
        ax.yaxis.get_major_locator().set_params(integer=True)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8, frameon=False)
    who = f"tester {tester}" if tester else f"all {len(report.testers)} testers pooled"
    fig.suptitle(f"Effective tester choices per target bin, {structure} ({who})", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


# -- writing --------------------------------------------------------------------------------
_CSS = """
body{font:15px/1.45 system-ui,sans-serif;color:#1d232b;max-width:1100px;margin:1.5rem auto;padding:0 1rem}
table{border-collapse:collapse;margin:0.8rem 0 1.6rem;font-variant-numeric:tabular-nums}
table{min-width:32rem}
caption{text-align:left;font-weight:600;padding:0.3rem 0;white-space:nowrap}
th,td{border-bottom:1px solid #dde2e8;padding:0.25rem 0.7rem;text-align:center}
th{background:#eef2f6}
img{max-width:100%;border:1px solid #e3e7ec;margin:0.5rem 0}
.note{color:#5b6673;font-size:0.9rem}
details{margin:0.5rem 0}
"""


def write_report(
    report: StudyReport,
    out: Path,
    *,
    source: str = "",
    tester: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write report.html, report.json, per_tester.csv and the PNG tables and figures;
    ``progress(done, total)`` after each PNG (the slow part)."""
    n_png = 2 + len(report.structures)

    def drawn(png: Path) -> None:
        written.append(png)
        if progress is not None:
            progress(sum(1 for p in written if p.suffix == ".png"), n_png)

    if not report.groups:
        raise DataError("no answers yet: nothing to report")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    json_path = out / "report.json"
    json_path.write_text(json.dumps(report.to_json(), indent=2))
    written.append(json_path)

    csv_path = out / "per_tester.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "structure",
                "system",
                "tester",
                "bin",
                "N",
                "N_kept",
                "T",
                "P",
                "E",
                "confusion",
                "domination",
            ]
        )
        for g in report.groups:
            for t in g.testers:
                for b, c in enumerate(g.per_tester[t]):
                    conf, dom = confusion(c), domination(c)
                    writer.writerow(
                        [g.structure, g.system, t, bin_label(b), c.shown, c.kept, c.target,
                         c.prediction, c.equivalent,
                         "" if conf is None else f"{conf:.6f}", "" if dom is None else f"{dom:.6f}"]
                    )  # fmt: skip
    written.append(csv_path)

    sections = []
    for number, (metric, title) in enumerate(
        [("confusion", "Confusion"), ("domination", "Domination")], start=1
    ):
        header, rows, bold = table_cells(report, metric)
        caption = f"Table {number}: {title} of the network given the target quality (mean ± std over testers)."
        png = out / f"table{number}_{metric}.png"
        _table_png(png, caption, header, rows, bold)
        drawn(png)
        sections.append(
            _html_table(caption, header, rows, bold)
            + f'<p class="note">As an image: <a href="{png.name}">{png.name}</a></p>'
        )

    for number, structure in enumerate(report.structures, start=8):
        png = out / f"figure_choices_{_slug(structure)}.png"
        _choices_png(png, report, structure, tester)
        drawn(png)
        sections.append(
            f"<h3>Figure {number}: effective tester choices per bin of target quality, "
            f'{html.escape(structure)}</h3><img src="{png.name}" alt="choices {html.escape(structure)}">'
        )

    details = "".join(
        f"<details><summary>{html.escape(g.title)}</summary>{_detail_table(g)}</details>"
        for g in report.groups
    )
    has_random = any(g.system == "random" for g in report.groups)
    baseline_note = (
        "Random baseline: scores drawn uniformly from the training labels."
        if has_random
        else "No random-baseline trials in this study (add them with "
        "<code>stedloop study add-baseline</code>)."
    )
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>stedloop study report</title><style>{_CSS}</style></head><body>
<h1>Expert study report</h1>
<p class="note">{len(report.testers)} tester(s), {report.answers} answers. Source: {html.escape(source)}.
Generated {generated}. Metrics per tester, then mean ± population std over testers; "–": undefined
(Ñ = 0, or T + P = 0 for domination). Bold: the better system in a bin. {baseline_note}</p>
{"".join(sections)}
<h2>Per-tester counts</h2>
<p class="note">N shown, Ñ kept (not discarded), T target picked, P prediction picked, E equivalent.
Confusion C = 1 − |(2P + E) − Ñ| / Ñ, domination D = P / (T + P).</p>
{details}
</body></html>
"""
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    written.insert(0, html_path)
    return written


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text) or "unknown"
