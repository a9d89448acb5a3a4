"""Labelling mode: microscopists score new images on [0, 1]; the result is a data set that
``stedloop train`` reads (see :mod:`stedloop.quality.dataset`).

Each labeller gets a data set of their own, ``OUT/<slug>-<hash>/`` (see
``labeller_folder_name``): ``images/*.tif`` (2-D 8- or
16-bit TIFFs, the STED channel of the source) and ``manifest.csv`` with columns ``path``
(relative to that folder), ``score``, ``structure``, ``dwell_time_us``, ``excitation_uw``,
``depletion_mw`` (empty when the source does not record them), ``labeller``, ``labelled_at``.
The network learns one expert at a time, so labellers are never mixed in one manifest. Scores
live in the SQLite database first; the manifest is rewritten atomically after every score.
"""

from __future__ import annotations

import csv
import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from stedloop.errors import DataError
from stedloop.study.render import render_png
from stedloop.study.store import StudyStore, check_name
from stedloop.study.studyset import read_image_2d

MANIFEST_NAME = "manifest.csv"  # what stedloop.quality.dataset reads
MANIFEST_COLUMNS = (
    "path",
    "score",
    "structure",
    "dwell_time_us",
    "excitation_uw",
    "depletion_mw",
    "labeller",
    "labelled_at",
)
PARAM_COLUMNS = ("dwell_time_us", "excitation_uw", "depletion_mw")
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True)
class LabelItem:
    index: int
    source: Path
    relpath: str  # relative to the source folder, "/"-separated: the image's identity

    @property
    def output_name(self) -> str:
        """Flat, unique file name in the data set (sub-folders joined by '__')."""
        stem = self.relpath.rsplit(".", 1)[0].replace("/", "__")
        return re.sub(r"[^\w.-]", "_", stem) + ".tif"


def list_images(folder: Path) -> list[LabelItem]:
    """Every TIFF under ``folder`` (recursively), in a stable order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder of images to label not found")
    paths = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".tif", ".tiff")
    )
    if not paths:
        raise DataError(f"{folder}: no .tif/.tiff images to label")
    return [LabelItem(i, p, p.relative_to(folder).as_posix()) for i, p in enumerate(paths)]


#: Length of the hash of the exact name in a data set's folder name (hex digits).
FOLDER_HASH_LENGTH = 10
_SLUG_MAX_LENGTH = 40


def check_labeller_name(name: str) -> str:
    """A labeller name as the study store accepts it, with at least one letter or digit."""
    cleaned = check_name(name, "labeller name")
    if not any(ch.isalnum() for ch in cleaned):
        raise DataError(f"labeller name {cleaned!r} needs at least one letter or digit")
    return cleaned


def labeller_folder_name(name: str) -> str:
    """The data set folder of one labeller: a readable ASCII slug + a hash of the exact name.

    The slug alone is not unique ("a b", "a_b" and "a@b" share one; "Anna" and "anna" share
    one on a case-insensitive disk), the hash is; the slug only helps a human find theirs."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:_SLUG_MAX_LENGTH]
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:FOLDER_HASH_LENGTH]
    return f"{slug or 'labeller'}-{digest}"


def legacy_folder_name(name: str) -> str:
    """The folder name used before the hash was added (shared by look-alike names)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "labeller"


def manifest_labellers(folder: Path) -> set[str]:
    """Whose scores a data set folder's manifest holds (empty if it has none)."""
    try:
        with (folder / MANIFEST_NAME).open(newline="", encoding="utf-8") as fh:
            return {row.get("labeller") or "" for row in csv.DictReader(fh)}
    except FileNotFoundError:
        return set()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{folder / MANIFEST_NAME}: cannot be read ({exc})") from None


def _params_of(path: Path) -> dict[str, float]:
    """Imaging parameters recorded by a stedloop OME-TIFF, when the TIFF reader exists."""
    try:
        from stedloop.tiffio import read_frame_tiff  # written by the simulator area
    except ImportError:
        return {}
    try:
        frame = read_frame_tiff(path)
    except Exception:  # a plain TIFF without stedloop metadata: nothing to record
        return {}
    params = getattr(frame, "params", None)
    out = {}
    for name in PARAM_COLUMNS:
        value = getattr(params, name, None)
        if isinstance(value, int | float):
            out[name] = float(value)
    return out


def _checked_image(path: Path) -> np.ndarray:
    image = read_image_2d(path)
    if not np.issubdtype(image.dtype, np.integer) or image.dtype.itemsize > 2:
        raise DataError(f"{path}: expected 8- or 16-bit integer pixels, got {image.dtype}")
    return image


class DatasetWriter:
    """Writes one labeller's data set from the scores in the database."""

    def __init__(
        self, items: list[LabelItem], out: Path, store: StudyStore, structure: str
    ) -> None:
        self.items = items
        self.out = Path(out)
        self.store = store
        self.structure = structure
        self._lock = threading.Lock()
        self._params: dict[int, dict[str, float]] = {}

    def folder(self, labeller: str) -> Path:
        return self.out / labeller_folder_name(labeller)

    def add(self, labeller: str, item: LabelItem, score: float) -> Path:
        """Record a score, copy the image into the data set, rewrite the manifest."""
        image = _checked_image(item.source)  # refuse before storing anything
        folder = self.folder(labeller)
        with self._lock:
            self._claim(labeller, folder)
            self._copy_image(item, folder, image)
            if item.index not in self._params:
                self._params[item.index] = _params_of(item.source)
            self.store.set_label(labeller, item.relpath, score)
            self._write_manifest(labeller, folder)
        return folder / MANIFEST_NAME

    def _claim(self, labeller: str, folder: Path) -> None:
        """Make ``folder`` this labeller's: take over their old-style folder if it is theirs
        alone, and never write into a folder that holds someone else's scores."""
        if not folder.exists():
            legacy = self.out / legacy_folder_name(labeller)
            if legacy.is_dir() and manifest_labellers(legacy) == {labeller}:
                legacy.rename(folder)
            return
        others = manifest_labellers(folder) - {labeller}
        if others:
            raise DataError(
                f"{folder} holds the scores of {', '.join(sorted(map(repr, others)))}, not "
                f"{labeller!r}; move that folder away"
            )

    @staticmethod
    def _copy_image(item: LabelItem, folder: Path, image: np.ndarray | None = None) -> None:
        target = folder / "images" / item.output_name
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tifffile.imwrite(tmp, _checked_image(item.source) if image is None else image)
        tmp.replace(target)

    def _write_manifest(self, labeller: str, folder: Path) -> None:
        labels = self.store.labels_with_time(labeller)
        tmp = folder / (MANIFEST_NAME + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            for item in self.items:
                if item.relpath not in labels:
                    continue
                score, labelled_at = labels[item.relpath]
                # Scores stored before this folder existed (an old-style folder left to its
                # look-alike) get their image here too: every manifest row has its file.
                self._copy_image(item, folder)
                if item.index not in self._params:
                    self._params[item.index] = _params_of(item.source)
                params = self._params[item.index]
                writer.writerow(
                    {
                        "path": f"images/{item.output_name}",
                        "score": f"{score:.4f}",
                        "structure": self.structure,
                        **{k: (f"{params[k]:g}" if k in params else "") for k in PARAM_COLUMNS},
                        "labeller": labeller,
                        "labelled_at": labelled_at,
                    }
                )
        tmp.replace(folder / MANIFEST_NAME)


class LabelStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)


class LabelScore(BaseModel):
    model_config = ConfigDict(extra="forbid")
    who: str = Field(min_length=1, max_length=64)
    item: int = Field(ge=0)
    score: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)


def add_label_routes(
    app: FastAPI,
    source: Path,
    out: Path,
    store: StudyStore,
    *,
    structure: str = "unknown",
    pixel_size_nm: float = 20.0,
) -> DatasetWriter:
    """Mount the labelling pages and API on ``app``."""
    items = list_images(source)
    writer = DatasetWriter(items, out, store, structure)
    static_dir = Path(__file__).parent / "static"

    def item_or_404(index: int) -> LabelItem:
        if not 0 <= index < len(items):
            raise HTTPException(404, f"no image {index}")
        return items[index]

    def state(who: str, index: int) -> dict[str, Any]:
        labels = store.labels(who)
        item = item_or_404(index)
        following = [i for i in range(len(items)) if items[i].relpath not in labels]
        next_unlabelled = next(
            (i for i in following if i > index), following[0] if following else None
        )
        return {
            "labeller": who,
            "index": index,
            "total": len(items),
            "labelled": sum(1 for it in items if it.relpath in labels),
            "name": item.relpath,
            "score": labels.get(item.relpath),
            "image": f"/api/label/image/{index}.png",
            "next_unlabelled": next_unlabelled,
            "dataset": str(writer.folder(who)),
        }

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return FileResponse(static_dir / "label.html", headers=_NO_STORE, media_type="text/html")

    @app.post("/api/label/start")
    def start(body: LabelStart) -> JSONResponse:
        who = check_labeller_name(body.name)
        labels = store.labels(who)
        first = next((i for i, it in enumerate(items) if it.relpath not in labels), 0)
        return JSONResponse(state(who, first), headers=_NO_STORE)

    @app.get("/api/label/item/{index}")
    def get_item(index: int, who: str = Query(min_length=1, max_length=64)) -> JSONResponse:
        return JSONResponse(state(check_labeller_name(who), index), headers=_NO_STORE)

    @app.post("/api/label/score")
    def score(body: LabelScore) -> JSONResponse:
        who = check_labeller_name(body.who)
        writer.add(who, item_or_404(body.item), body.score)
        return JSONResponse(state(who, body.item), headers=_NO_STORE)

    @app.get("/api/label/image/{index}.png", include_in_schema=False)
    def image(index: int) -> Response:
        item = item_or_404(index)
        return Response(
            render_png(read_image_2d(item.source), pixel_size_nm),
            media_type="image/png",
            headers=_NO_STORE,
        )

    return writer
