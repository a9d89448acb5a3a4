"""Reading a study set: ``DIR/images/*.tif`` plus ``DIR/study.csv``.

``study.csv`` columns (as written by ``stedloop evaluate --study-set DIR``):

- ``image``: path of a 16-bit TIFF, relative to DIR (must stay inside DIR);
- ``target``: the expert's score in [0, 1];
- ``prediction``: the scoring system's score in [0, 1];
- ``structure``: e.g. actin, tubulin (the report gives each structure its own columns, like
  the paper's Actin / Tubulin columns);
- ``system`` (optional): ``network`` (default when the column is absent or empty) or
  ``random`` for the paper's baseline that samples a score uniformly from the training labels
  (``stedloop study add-baseline`` appends such rows).
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from stedloop.csvtable import read_csv_table
from stedloop.errors import DataError

STUDY_CSV = "study.csv"
REQUIRED_COLUMNS = ("image", "target", "prediction", "structure")
SYSTEMS = ("network", "random")


@dataclass(frozen=True)
class StudyRow:
    """One trial of the study: an image and the two scores to compare."""

    index: int  # 0-based row number in study.csv (stable trial identity)
    image: str  # path relative to the set folder, as written in the CSV
    target: float
    prediction: float
    structure: str
    system: str


@dataclass(frozen=True)
class StudySet:
    """A validated study set."""

    root: Path
    rows: tuple[StudyRow, ...]
    fingerprint: str  # sha256 of study.csv: an answer database belongs to one exact set

    def image_path(self, row: StudyRow) -> Path:
        return self.root / row.image


def _score(value: str, column: str, where: str) -> float:
    try:
        score = float(value)
    except ValueError:
        raise DataError(f"{where}: {column} {value!r} is not a number") from None
    if not np.isfinite(score) or not 0.0 <= score <= 1.0:
        raise DataError(f"{where}: {column} {value!r} is outside [0, 1]")
    return score


def _inside(root: Path, relative: str, where: str) -> Path:
    if not relative:
        raise DataError(f"{where}: empty image path")
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DataError(f"{where}: image {relative!r} lies outside the study folder")
    if not path.is_file():
        raise DataError(f"{where}: image {relative!r} does not exist")
    return path


def load_study_set(root: Path) -> StudySet:
    """Read and check ``root/study.csv``; every problem raises DataError naming file and line."""
    root = Path(root)
    csv_path = root / STUDY_CSV
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: study set has no {STUDY_CSV}")
    table = read_csv_table(csv_path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {', '.join(missing)}")
    rows: list[StudyRow] = []
    for line_no, record in table.rows:
        where = f"{csv_path}:{line_no}"
        image = (record.get("image") or "").strip()
        _inside(root, image, where)
        system = (record.get("system") or "").strip() or "network"
        if system not in SYSTEMS:
            raise DataError(f"{where}: system {system!r} is not one of {', '.join(SYSTEMS)}")
        structure = (record.get("structure") or "").strip() or "unknown"
        rows.append(
            StudyRow(
                index=len(rows),
                image=image,
                target=_score((record.get("target") or "").strip(), "target", where),
                prediction=_score((record.get("prediction") or "").strip(), "prediction", where),
                structure=structure,
                system=system,
            )
        )
    if not rows:
        raise DataError(f"{csv_path}: no trials")
    return StudySet(root=root, rows=tuple(rows), fingerprint=hashlib.sha256(table.raw).hexdigest())


def read_image_2d(path: Path) -> np.ndarray:
    """The STED image of a TIFF as a 2-D array.

    A plain 2-D TIFF is returned as is; a stedloop OME-TIFF (channels confocal_before, sted,
    confocal_after) gives its STED channel (index 1).
    """
    try:
        data = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise DataError(f"{path}: cannot read TIFF ({exc})") from None
    array = np.asarray(data)
    if array.ndim == 3 and array.shape[0] == 3:
        array = array[1]
    elif array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-D image, got shape {array.shape}")
    if array.size == 0:
        raise DataError(f"{path}: empty image")
    return array


def read_label_scores(path: Path) -> list[float]:
    """The ``score`` column of a CSV (e.g. a training manifest), for the random baseline."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    table = read_csv_table(path)
    if "score" not in table.columns:
        raise DataError(f"{path}: no 'score' column")
    scores = [
        _score((rec.get("score") or "").strip(), "score", f"{path}:{n}") for n, rec in table.rows
    ]
    if not scores:
        raise DataError(f"{path}: no scores")
    return scores


def add_random_baseline(root: Path, label_scores: Sequence[float], seed: int | None = None) -> int:
    """Append one ``system=random`` trial per network trial to ``root/study.csv``.

    The random system predicts by drawing uniformly from the training labels (paper,
    Benchmark section). Refuses a set that already has random rows. Returns rows added.
    """
    study = load_study_set(root)
    if any(r.system == "random" for r in study.rows):
        raise DataError(f"{root / STUDY_CSV}: already has random-baseline trials")
    rng = random.Random(seed)
    network = [r for r in study.rows if r.system == "network"]
    csv_path = Path(root) / STUDY_CSV
    with csv_path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        records = list(reader)
    if "system" not in fields:
        fields.append("system")
        for rec in records:
            rec["system"] = "network"
    for row in network:
        records.append(
            {
                **{f: "" for f in fields},
                "image": row.image,
                "target": repr(row.target),
                "prediction": f"{rng.choice(list(label_scores)):.6g}",
                "structure": row.structure,
                "system": "random",
            }
        )
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)
    tmp.replace(csv_path)
    return len(network)
