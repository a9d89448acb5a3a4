"""Labelled data sets: a folder of 16-bit TIFFs plus a manifest, and the stratified split.

Layout (either form):

- ``DIR/manifest.csv`` with columns ``path`` (relative to DIR), ``score`` (in [0, 1]),
  ``structure`` and optionally ``dwell_time_us``, ``excitation_uw``, ``depletion_mw``;
- no manifest: every ``DIR/*.tif[f]`` named ``<name>-<score>.tif`` (e.g. ``img12-0.73.tif``),
  structure ``unknown``.

Images must be 8/16-bit integer TIFFs holding one 2-D image, or multi-channel OME-TIFFs with
one channel named STED (the frames stedloop writes; see ``stedloop.tiffio.read_sted_image``).
Size policy: see
:mod:`stedloop.quality.preprocess` (centre crop if larger, refused if smaller).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stedloop.csvtable import read_csv_table
from stedloop.errors import DataError
from stedloop.quality.preprocess import check_image, fit_to_size
from stedloop.tiffio import PickedImage, read_sted_image

MANIFEST_NAME = "manifest.csv"
PARAM_COLUMNS: tuple[str, ...] = ("dwell_time_us", "excitation_uw", "depletion_mw")
_NAMED_SCORE = re.compile(r"^(?P<name>.+)-(?P<score>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")


@dataclass(frozen=True)
class LabelledImage:
    """One labelled image of a data set."""

    path: Path  # absolute
    relpath: str  # as written in the manifest (relative to the data folder)
    score: float
    structure: str = "unknown"
    params: dict[str, float] = field(default_factory=dict)


def _parse_score(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: score {text!r} is not a number") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise DataError(f"{where}: score {text!r} is outside [0, 1]")
    return value


def read_manifest(folder: Path) -> list[LabelledImage]:
    manifest = folder / MANIFEST_NAME
    items: list[LabelledImage] = []
    table = read_csv_table(manifest)
    missing = {"path", "score"} - set(table.columns)
    if missing:
        raise DataError(f"{manifest}: missing column(s) {', '.join(sorted(missing))}")
    for line, row in table.rows:
        where = f"{manifest}:{line}"
        rel = (row.get("path") or "").strip()
        if not rel:
            raise DataError(f"{where}: empty path")
        params: dict[str, float] = {}
        for name in PARAM_COLUMNS:
            text = (row.get(name) or "").strip()
            if text:
                try:
                    params[name] = float(text)
                except ValueError:
                    raise DataError(f"{where}: {name} {text!r} is not a number") from None
        items.append(
            LabelledImage(
                path=(folder / rel).resolve(),
                relpath=rel,
                score=_parse_score((row.get("score") or "").strip(), where),
                structure=(row.get("structure") or "unknown").strip() or "unknown",
                params=params,
            )
        )
    return items


def read_named_folder(folder: Path) -> list[LabelledImage]:
    items = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
            continue
        match = _NAMED_SCORE.match(path.stem)
        if match is None:
            raise DataError(
                f"{path}: no manifest.csv in {folder} and the name is not <name>-<score>.tif"
            )
        score = _parse_score(match.group("score"), str(path))
        items.append(LabelledImage(path=path.resolve(), relpath=path.name, score=score))
    return items


def load_dataset(folder: Path) -> list[LabelledImage]:
    """The labelled images of ``folder`` (manifest if present, else file names)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder not found")
    items = (
        read_manifest(folder) if (folder / MANIFEST_NAME).is_file() else read_named_folder(folder)
    )
    if not items:
        raise DataError(f"{folder}: no labelled images found")
    for item in items:
        if not item.path.is_file():
            raise DataError(f"{item.path}: image listed in the data set does not exist")
    return items


def read_tiff_image(path: Path) -> np.ndarray:
    """The 2-D integer image to score from a TIFF (see ``read_scorable_image``)."""
    return read_scorable_image(path).image


def read_scorable_image(path: Path) -> PickedImage:
    """The 2-D integer image of a TIFF, or the STED channel of a stedloop frame, and which
    channel it was; DataError naming the file otherwise."""
    path = Path(path)
    # stedloop.tiffio raises DataError naming the file when it is missing, corrupt or ambiguous
    picked = read_sted_image(path)
    dtype = picked.image.dtype
    if not np.issubdtype(dtype, np.integer) or dtype.itemsize > 2:
        raise DataError(f"{path}: expected 8- or 16-bit integer pixels, got {dtype}")
    return picked


def load_images(items: Sequence[LabelledImage], size_px: int) -> np.ndarray:
    """All images validated and centre-cropped, as (N, S, S) float32 counts."""
    out = np.empty((len(items), size_px, size_px), dtype=np.float32)
    for i, item in enumerate(items):
        name = str(item.path)
        out[i] = fit_to_size(check_image(read_tiff_image(item.path), name), size_px, name)
    return out


def stratified_split(
    scores: Sequence[float], seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> tuple[list[int], list[int], list[int]]:
    """Indices of train/validation/test, keeping the label distribution in each part.

    Labels are grouped in ten 0.1-wide bins; each bin is shuffled and cut 80/10/10, so
    every part follows the whole set's (unbalanced) distribution, as in the paper.
    """
    if len(scores) < 3:
        raise DataError(f"need at least 3 labelled images to split, got {len(scores)}")
    rng = np.random.default_rng(seed)
    bins: dict[int, list[int]] = {}
    for index, score in enumerate(scores):
        bins.setdefault(min(int(score * 10), 9), []).append(index)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    carry_val = carry_test = 0.0
    for key in sorted(bins):
        members = list(rng.permutation(bins[key]))
        # Carry rounding remainders across bins so small bins do not all round to 0.
        carry_val += len(members) * fractions[1]
        carry_test += len(members) * fractions[2]
        n_val, n_test = int(carry_val), int(carry_test)
        n_val = min(n_val, len(members))
        n_test = min(n_test, len(members) - n_val)
        carry_val -= n_val
        carry_test -= n_test
        val += members[:n_val]
        test += members[n_val : n_val + n_test]
        train += members[n_val + n_test :]
    if not val:
        val.append(train.pop())
    if not test and fractions[2] > 0:  # a test fraction of 0 asks for no test split
        test.append(train.pop())
    return sorted(int(i) for i in train), sorted(int(i) for i in val), sorted(int(i) for i in test)


def write_manifest(folder: Path, rows: Sequence[dict[str, object]]) -> Path:
    """Write ``manifest.csv`` (path, score, structure, params..., extra columns)."""
    path = Path(folder) / MANIFEST_NAME
    base = ["path", "score", "structure", *PARAM_COLUMNS]
    extra = sorted({k for row in rows for k in row} - set(base))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=base + extra)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    tmp.replace(path)
    return path
