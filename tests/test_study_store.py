"""The answer database and the study set reader: real files, real SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from study_helpers import DEFAULT_ROWS, make_study_set

from stedloop.errors import DataError
from stedloop.study.store import StudyStore
from stedloop.study.studyset import add_random_baseline, load_study_set, read_label_scores


@pytest.fixture
def study(tmp_path: Path):
    return load_study_set(make_study_set(tmp_path / "set", DEFAULT_ROWS))


def test_study_set_reads_rows(study) -> None:
    assert len(study.rows) == 8
    assert study.rows[0].target == 0.10 and study.rows[0].prediction == pytest.approx(0.731942)
    assert {r.system for r in study.rows} == {"network", "random"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("images/actin_000.tif,1.5,0.2,actin,network", "target '1.5' is outside"),
        ("images/actin_000.tif,0.5,abc,actin,network", "prediction 'abc' is not a number"),
        ("images/missing.tif,0.5,0.5,actin,network", "does not exist"),
        ("../outside.tif,0.5,0.5,actin,network", "outside the study folder"),
        ("images/actin_000.tif,0.5,0.5,actin,oracle", "system 'oracle'"),
    ],
)
def test_study_set_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    root = make_study_set(tmp_path / "set", DEFAULT_ROWS[:1])
    (tmp_path / "outside.tif").write_bytes((root / "images/actin_000.tif").read_bytes())
    (root / "study.csv").write_text(f"image,target,prediction,structure,system\n{line}\n")
    with pytest.raises(DataError, match=message) as info:
        load_study_set(root)
    assert "study.csv:2" in str(info.value)


def test_study_set_missing_column(tmp_path: Path) -> None:
    root = tmp_path / "set"
    root.mkdir()
    (root / "study.csv").write_text("image,target\n")
    with pytest.raises(DataError, match="missing column"):
        load_study_set(root)


def test_sessions_answers_and_resume(tmp_path: Path, study) -> None:
    store = StudyStore(tmp_path / "answers.sqlite")
    store.bind(study)
    alice = store.start_or_resume("Alice", study)
    assert store.progress(alice) == (0, 8)
    first = store.current_trial(alice)
    assert first is not None and first.position == 0
    # The same name resumes the same session (reconnect from another browser).
    assert store.start_or_resume("  Alice ", study) == alice
    choice = store.answer(alice, first.token, "first")
    assert choice == first.first_shown
    # A stale token (the one just answered) is refused, not double-counted.
    with pytest.raises(DataError, match="not the current one"):
        store.answer(alice, first.token, "second")
    second = store.current_trial(alice)
    assert second is not None and second.position == 1
    other = "prediction" if second.first_shown == "target" else "target"
    assert store.answer(alice, second.token, "second") == other
    with pytest.raises(DataError, match="unknown answer"):
        store.answer(alice, store.current_trial(alice).token, "network")  # type: ignore[union-attr]
    store.close()

    # A fresh connection (server restart) resumes at trial 3 with the stored answers.
    reopened = StudyStore(tmp_path / "answers.sqlite")
    reopened.bind(study)
    again = reopened.start_or_resume("Alice", study)
    assert reopened.progress(again) == (2, 8)
    assert reopened.current_trial(again).position == 2  # type: ignore[union-attr]
    records = reopened.answers()
    assert [r.choice for r in records] == [first.first_shown, other]
    assert all(r.answered_at.endswith("+00:00") and r.shown_at for r in records)


def test_every_trial_has_a_token_and_order_varies(tmp_path: Path, study) -> None:
    store = StudyStore(tmp_path / "a.sqlite")
    firsts = []
    orders = []
    for i in range(6):
        tester = store.start_or_resume(f"t{i}", study)
        trials = []
        while (trial := store.current_trial(tester)) is not None:
            trials.append(trial)
            store.answer(tester, trial.token, "discard")
        assert sorted(t.row_index for t in trials) == list(range(8))
        assert len({t.token for t in trials}) == 8
        firsts += [t.first_shown for t in trials]
        orders.append(tuple(t.row_index for t in trials))
    # 48 fair coin flips: both orders occur (fails with probability 2 * 2^-48).
    assert set(firsts) == {"target", "prediction"}
    assert len(set(orders)) > 1


def test_database_belongs_to_one_set(tmp_path: Path, study) -> None:
    store = StudyStore(tmp_path / "a.sqlite")
    store.bind(study)
    csv_path = study.root / "study.csv"
    csv_path.write_text(csv_path.read_text().replace("0.10,", "0.15,", 1))
    with pytest.raises(DataError, match="another study set"):
        store.bind(load_study_set(study.root))


def test_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "x.sqlite"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(DataError, match="not a usable study database"):
        StudyStore(bad)


def test_bad_tester_names(tmp_path: Path, study) -> None:
    store = StudyStore(tmp_path / "a.sqlite")
    for name in ["", "   ", "x" * 65, "<script>"]:
        with pytest.raises(DataError, match="tester name"):
            store.start_or_resume(name, study)


def test_schema_rejects_bad_choice_even_below_the_api(tmp_path: Path, study) -> None:
    store = StudyStore(tmp_path / "a.sqlite")
    tester = store.start_or_resume("bob", study)
    db = sqlite3.connect(tmp_path / "a.sqlite")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO answers (trial_id, tester_id, raw_choice, choice, answered_at)"
            " VALUES (1, ?, 'first', 'network', 'now')",
            (tester.id,),
        )


def test_random_baseline_samples_training_labels(tmp_path: Path) -> None:
    root = make_study_set(tmp_path / "set", [r for r in DEFAULT_ROWS if r[3] == "network"])
    labels = tmp_path / "train.csv"
    labels.write_text("path,score,structure\na.tif,0.25,actin\nb.tif,0.75,actin\n")
    added = add_random_baseline(root, read_label_scores(labels), seed=1)
    assert added == 5
    study = load_study_set(root)
    random_rows = [r for r in study.rows if r.system == "random"]
    assert len(random_rows) == 5
    assert {r.prediction for r in random_rows} <= {0.25, 0.75}
    network = [r for r in study.rows if r.system == "network"]
    assert [r.target for r in random_rows] == [r.target for r in network]
    with pytest.raises(DataError, match="already has random"):
        add_random_baseline(root, [0.5])
