"""SQLite storage of study sessions, trials, answers and labels, with UTC timestamps.

The database is the only place that knows which of the two scores shown in a trial is the
network's (``trials.first_shown``): the browser only ever sees "first" and "second". Trial
rows copy the image, scores, structure and system from the study set, so a report needs
nothing but the database.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from stedloop.errors import DataError
from stedloop.metrics import Choice
from stedloop.study.studyset import StudySet

RawChoice = Literal["first", "second", "equivalent", "discard"]
RAW_CHOICES: tuple[str, ...] = ("first", "second", "equivalent", "discard")
_NAME_RE = re.compile(r"^[\w .@'-]{1,64}$", re.UNICODE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS testers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    tester_id INTEGER NOT NULL REFERENCES testers(id),
    position INTEGER NOT NULL,
    token TEXT NOT NULL UNIQUE,
    row_index INTEGER NOT NULL,
    image TEXT NOT NULL,
    structure TEXT NOT NULL,
    system TEXT NOT NULL,
    target REAL NOT NULL,
    prediction REAL NOT NULL,
    first_shown TEXT NOT NULL CHECK (first_shown IN ('target', 'prediction')),
    shown_at TEXT,
    UNIQUE (tester_id, position)
);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY,
    trial_id INTEGER NOT NULL UNIQUE REFERENCES trials(id),
    tester_id INTEGER NOT NULL REFERENCES testers(id),
    raw_choice TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('target', 'prediction', 'equivalent', 'discard')),
    answered_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY,
    labeller TEXT NOT NULL,
    image TEXT NOT NULL,
    score REAL NOT NULL CHECK (score >= 0 AND score <= 1),
    labelled_at TEXT NOT NULL,
    UNIQUE (labeller, image)
);
"""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def check_name(name: str, what: str = "tester name") -> str:
    """A tester/labeller name: 1–64 letters, digits, spaces, or . @ ' - _."""
    cleaned = " ".join(str(name).split())
    if not _NAME_RE.match(cleaned):
        raise DataError(f"{what} must be 1–64 letters, digits, spaces or . @ ' - _")
    return cleaned


@dataclass(frozen=True)
class Tester:
    id: int
    name: str
    token: str


@dataclass(frozen=True)
class Trial:
    id: int
    tester_id: int
    position: int
    token: str
    row_index: int
    image: str
    structure: str
    system: str
    target: float
    prediction: float
    first_shown: str  # "target" or "prediction"

    def shown_scores(self) -> tuple[float, float]:
        """The two scores in the order the tester sees them."""
        if self.first_shown == "target":
            return self.target, self.prediction
        return self.prediction, self.target

    def resolve(self, raw: str) -> Choice:
        """Map what the tester clicked ("first", "second", ...) to what it means."""
        if raw not in RAW_CHOICES:
            raise DataError(f"unknown answer {raw!r}; expected one of {', '.join(RAW_CHOICES)}")
        if raw in ("equivalent", "discard"):
            return raw  # type: ignore[return-value]
        second = "prediction" if self.first_shown == "target" else "target"
        return self.first_shown if raw == "first" else second  # type: ignore[return-value]


@dataclass(frozen=True)
class AnswerRecord:
    """One answered trial, for the report."""

    tester: str
    position: int
    image: str
    structure: str
    system: str
    target: float
    prediction: float
    first_shown: str
    raw_choice: str
    choice: Choice
    shown_at: str | None
    answered_at: str


class StudyStore:
    """The answer database (one file per study). Thread-safe: one connection, one lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a usable study database ({exc})") from None
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- study set binding ------------------------------------------------------------------
    def bind(self, study: StudySet) -> None:
        """Tie the database to one study set; refuse a database made for another set."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (study.fingerprint,))
                db.execute("INSERT INTO meta VALUES ('set', ?)", (str(study.root.resolve()),))
                db.execute("INSERT INTO meta VALUES ('created_at', ?)", (utc_now(),))
            elif row["value"] != study.fingerprint:
                raise DataError(
                    f"{self.path}: this answer database belongs to another study set "
                    f"(study.csv changed since it was created); use a new --db file"
                )

    # -- testers and trials -----------------------------------------------------------------
    def start_or_resume(self, name: str, study: StudySet) -> Tester:
        """The tester's session; a new name gets its own random trial order and score order."""
        name = check_name(name)
        with self._tx() as db:
            row = db.execute("SELECT * FROM testers WHERE name=?", (name,)).fetchone()
            if row is not None:
                return Tester(row["id"], row["name"], row["token"])
            token = secrets.token_urlsafe(18)
            cur = db.execute(
                "INSERT INTO testers (name, token, created_at) VALUES (?, ?, ?)",
                (name, token, utc_now()),
            )
            tester_id = int(cur.lastrowid or 0)
            rng = secrets.SystemRandom()  # unpredictable: a tester cannot infer the mapping
            order = list(study.rows)
            rng.shuffle(order)
            for position, study_row in enumerate(order):
                db.execute(
                    "INSERT INTO trials (tester_id, position, token, row_index, image, structure,"
                    " system, target, prediction, first_shown)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        tester_id,
                        position,
                        secrets.token_urlsafe(18),
                        study_row.index,
                        study_row.image,
                        study_row.structure,
                        study_row.system,
                        study_row.target,
                        study_row.prediction,
                        rng.choice(("target", "prediction")),
                    ),
                )
            return Tester(tester_id, name, token)

    def tester_by_token(self, token: str) -> Tester | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM testers WHERE token=?", (token,)).fetchone()
        return None if row is None else Tester(row["id"], row["name"], row["token"])

    @staticmethod
    def _trial(row: sqlite3.Row) -> Trial:
        return Trial(
            id=row["id"],
            tester_id=row["tester_id"],
            position=row["position"],
            token=row["token"],
            row_index=row["row_index"],
            image=row["image"],
            structure=row["structure"],
            system=row["system"],
            target=row["target"],
            prediction=row["prediction"],
            first_shown=row["first_shown"],
        )

    def current_trial(self, tester: Tester) -> Trial | None:
        """The first unanswered trial (where a reload or reconnect resumes); None when done."""
        with self._tx() as db:
            row = db.execute(
                "SELECT t.* FROM trials t LEFT JOIN answers a ON a.trial_id = t.id"
                " WHERE t.tester_id=? AND a.id IS NULL ORDER BY t.position LIMIT 1",
                (tester.id,),
            ).fetchone()
            if row is None:
                return None
            if row["shown_at"] is None:
                db.execute("UPDATE trials SET shown_at=? WHERE id=?", (utc_now(), row["id"]))
        return self._trial(row)

    def trial_by_token(self, token: str) -> Trial | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM trials WHERE token=?", (token,)).fetchone()
        return None if row is None else self._trial(row)

    def progress(self, tester: Tester) -> tuple[int, int]:
        """(answered, total) for a tester."""
        with self._lock:
            total = self._db.execute(
                "SELECT COUNT(*) FROM trials WHERE tester_id=?", (tester.id,)
            ).fetchone()[0]
            done = self._db.execute(
                "SELECT COUNT(*) FROM answers WHERE tester_id=?", (tester.id,)
            ).fetchone()[0]
        return int(done), int(total)

    def answer(self, tester: Tester, trial_token: str, raw_choice: str) -> Choice:
        """Record the answer to the tester's current trial.

        Only the current trial can be answered: answering another (a stale page, a second
        tab, a double click) raises DataError instead of skipping or double-counting.
        """
        with self._lock:
            current = self.current_trial(tester)
            if current is None:
                raise DataError("this study is already finished")
            if current.token != trial_token:
                raise DataError("this trial is not the current one (page out of date); reload")
            choice = current.resolve(raw_choice)
            with self._tx() as db:
                db.execute(
                    "INSERT INTO answers (trial_id, tester_id, raw_choice, choice, answered_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (current.id, tester.id, raw_choice, choice, utc_now()),
                )
            return choice

    def answers(self) -> list[AnswerRecord]:
        """Every answered trial of every tester, by tester then position."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.name, t.position, t.image, t.structure, t.system, t.target,"
                " t.prediction, t.first_shown, t.shown_at, a.raw_choice, a.choice, a.answered_at"
                " FROM answers a JOIN trials t ON t.id = a.trial_id"
                " JOIN testers s ON s.id = a.tester_id ORDER BY s.name, t.position"
            ).fetchall()
        return [
            AnswerRecord(
                tester=r["name"],
                position=r["position"],
                image=r["image"],
                structure=r["structure"],
                system=r["system"],
                target=r["target"],
                prediction=r["prediction"],
                first_shown=r["first_shown"],
                raw_choice=r["raw_choice"],
                choice=r["choice"],
                shown_at=r["shown_at"],
                answered_at=r["answered_at"],
            )
            for r in rows
        ]

    def testers(self) -> list[tuple[str, int, int]]:
        """(name, answered, total) per tester."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.name, (SELECT COUNT(*) FROM answers a WHERE a.tester_id=s.id),"
                " (SELECT COUNT(*) FROM trials t WHERE t.tester_id=s.id) FROM testers s"
                " ORDER BY s.name"
            ).fetchall()
        return [(r[0], int(r[1]), int(r[2])) for r in rows]

    # -- labelling --------------------------------------------------------------------------
    def set_label(self, labeller: str, image: str, score: float) -> None:
        """Store (or replace) one labeller's score of one image."""
        if not 0.0 <= score <= 1.0:
            raise DataError(f"score {score} is outside [0, 1]")
        with self._tx() as db:
            db.execute(
                "INSERT INTO labels (labeller, image, score, labelled_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (labeller, image) DO UPDATE SET score=excluded.score,"
                " labelled_at=excluded.labelled_at",
                (check_name(labeller, "labeller name"), image, float(score), utc_now()),
            )

    def labels_with_time(self, labeller: str) -> dict[str, tuple[float, str]]:
        """image -> (score, labelled_at) for one labeller."""
        with self._lock:
            rows = self._db.execute(
                "SELECT image, score, labelled_at FROM labels WHERE labeller=?", (labeller,)
            ).fetchall()
        return {r["image"]: (float(r["score"]), r["labelled_at"]) for r in rows}

    def labels(self, labeller: str) -> dict[str, float]:
        with self._lock:
            rows = self._db.execute(
                "SELECT image, score FROM labels WHERE labeller=?", (labeller,)
            ).fetchall()
        return {r["image"]: float(r["score"]) for r in rows}
