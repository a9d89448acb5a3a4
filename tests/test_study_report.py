"""The study report on answers whose metrics were computed by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from study_helpers import DEFAULT_ROWS, make_study_set

from stedloop.study.report import DASH, build_report, table_cells, write_report
from stedloop.study.store import AnswerRecord, StudyStore
from stedloop.study.studyset import load_study_set


def _a(
    tester: str, target: float, choice: str, system: str = "network", structure: str = "actin"
) -> AnswerRecord:
    return AnswerRecord(
        tester=tester, position=0, image="x.tif", structure=structure, system=system,
        target=target, prediction=0.5, first_shown="target", raw_choice="first",
        choice=choice, shown_at=None, answered_at="2024-01-01T00:00:00+00:00",
    )  # type: ignore[arg-type]  # fmt: skip


HAND_ANSWERS = [
    # Tester A, network: bin 0 -> N=4, Ñ=3, T=P=E=1: C = 1, D = 0.5
    _a("A", 0.10, "target"), _a("A", 0.10, "prediction"), _a("A", 0.15, "equivalent"),
    _a("A", 0.05, "discard"),
    # bin 1 -> Ñ=2, T=2: C = 1 − |0 − 2|/2 = 0, D = 0
    _a("A", 0.30, "target"), _a("A", 0.25, "target"),
    # Tester B, network: bin 0 -> Ñ=3, T=1, P=2: C = 1 − |4 − 3|/3 = 2/3, D = 2/3
    _a("B", 0.10, "prediction"), _a("B", 0.12, "prediction"), _a("B", 0.0, "target"),
    # bin 1 -> all discarded: undefined
    _a("B", 0.30, "discard"),
    # bin 4 -> one equivalent: C = 1, D undefined
    _a("B", 1.0, "equivalent"),
    # Tester A, random baseline: bin 0 -> T=2: C = 0, D = 0
    _a("A", 0.10, "target", system="random"), _a("A", 0.11, "target", system="random"),
]  # fmt: skip


def test_means_over_testers_by_hand() -> None:
    report = build_report(HAND_ANSWERS)
    assert report.testers == ["A", "B"]
    net = report.group("actin", "network")
    rnd = report.group("actin", "random")
    assert net is not None and rnd is not None
    c0 = net.metric("confusion", 0)
    # mean(1, 2/3) = 5/6; population std = (1 − 2/3)/2 = 1/6
    assert (c0.mean, c0.std, c0.n) == (pytest.approx(5 / 6), pytest.approx(1 / 6), 2)
    d0 = net.metric("domination", 0)
    # mean(0.5, 2/3) = 7/12; std = (2/3 − 1/2)/2 = 1/12
    assert (d0.mean, d0.std, d0.n) == (pytest.approx(7 / 12), pytest.approx(1 / 12), 2)
    c1 = net.metric("confusion", 1)
    assert (c1.mean, c1.std, c1.n) == (0.0, 0.0, 1)  # B's bin 1 is undefined, not zero
    assert net.metric("confusion", 2).mean is None
    assert net.metric("domination", 4).mean is None
    assert net.metric("confusion", 4).mean == 1.0
    pooled = net.pooled()
    assert (pooled[0].shown, pooled[0].kept, pooled[0].target, pooled[0].prediction) == (7, 6, 2, 3)


def test_tables_like_the_paper() -> None:
    header, rows, bold = table_cells(build_report(HAND_ANSWERS), "confusion")
    assert header == ["Target", "Actin Network", "Actin Random"]
    assert rows[0] == ["0.0–0.2", "0.83 ± 0.17", "0.00 ± 0.00"]
    assert bold[0] == [False, True, False]
    assert rows[1] == ["0.2–0.4", "0.00 ± 0.00", DASH]
    assert rows[2] == ["0.4–0.6", DASH, DASH]
    assert rows[4] == ["0.8–1.0", "1.00 ± 0.00", DASH]
    _, drows, _ = table_cells(build_report(HAND_ANSWERS), "domination")
    assert drows[0] == ["0.0–0.2", "0.58 ± 0.08", "0.00 ± 0.00"]
    assert drows[4] == ["0.8–1.0", DASH, DASH]


def test_write_report_files(tmp_path: Path) -> None:
    written = write_report(build_report(HAND_ANSWERS), tmp_path / "out", source="hand")
    names = {p.name for p in written}
    assert {"report.html", "report.json", "per_tester.csv", "table1_confusion.png",
            "table2_domination.png", "figure_choices_actin.png"} <= names  # fmt: skip
    for p in written:
        if p.suffix == ".png":
            assert p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 5000
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<b>0.83 ± 0.17</b>" in page and DASH in page and "nan" not in page.lower()
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["groups"][0]["bins"][2]["confusion"] == {"mean": None, "std": None, "n": 0}


def test_tester_names_are_escaped(tmp_path: Path) -> None:
    answers = [_a("O'Brien & co", 0.5, "target")]
    write_report(build_report(answers), tmp_path, source="x")
    page = (tmp_path / "report.html").read_text()
    assert "O&#x27;Brien &amp; co" in page


def test_report_cli_on_a_real_database(tmp_path: Path) -> None:
    study = load_study_set(make_study_set(tmp_path / "set", DEFAULT_ROWS))
    db = tmp_path / "answers.sqlite"
    store = StudyStore(db)
    store.bind(study)
    tester = store.start_or_resume("carol", study)
    # Carol always picks the network's score: domination 1 and confusion 0 wherever defined.
    while (trial := store.current_trial(tester)) is not None:
        store.answer(
            tester, trial.token, "first" if trial.first_shown == "prediction" else "second"
        )
    store.close()
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "stedloop.cli.main", "study", "report", "--db", str(db), "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    net = next(g for g in summary["groups"] if g["system"] == "network")
    assert [b["pooled"]["prediction"] for b in net["bins"]] == [1, 1, 1, 1, 1]
    assert all(b["domination"]["mean"] == 1.0 for b in net["bins"])
    assert all(b["confusion"]["mean"] == 0.0 for b in net["bins"])
    rnd = next(g for g in summary["groups"] if g["system"] == "random")
    assert [b["pooled"]["shown"] for b in rnd["bins"]] == [1, 1, 1, 0, 0]
    assert rnd["bins"][3]["confusion"]["mean"] is None
    assert (out / "report.html").is_file()

    missing = subprocess.run(
        [sys.executable, "-m", "stedloop.cli.main", "study", "report", "--db", str(tmp_path / "nope.sqlite"), "--out", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2 and "no such answer database" in missing.stderr
