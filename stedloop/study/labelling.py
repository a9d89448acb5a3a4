"""Labelling mode: microscopists score new images on [0, 1]; the result is a data set that
``stedloop train`` reads (see :mod:`stedloop.quality.dataset`).

Each labeller gets a data set of their own, ``OUT/<labeller>/``: ``images/*.tif`` (2-D 8- or
16-bit TIFFs, the STED channel of the source) and ``manifest.csv`` with columns ``path``
(relative to that folder), ``score``, ``structure``, ``dwell_time_us``, ``excitation_uw``,
``depletion_mw`` (empty when the source does not record them), ``labeller``, ``labelled_at``.
The network learns one expert at a time, so labellers are never mixed in one manifest. Scores
live in the SQLite database first; the manifest is rewritten atomically after every score.
"""

from __future__ import annotations

import csv
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


def labeller_slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "labeller"


def _params_of(path: Path) -> dict[str, float]:
    """Imaging parameters recorded by a stedloop OME-TIFF, when the TIFF reader exists."""
    try:
        from stedloop.tiffio import read_frame_tiff  # written by the simulator area
    except ImportError:
        return {}
    try:
        frame: Any = read_frame_tiff(path)
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
        return self.out / labeller_slug(labeller)

    def add(self, labeller: str, item: LabelItem, score: float) -> Path:
        """Record a score, copy the image into the data set, rewrite the manifest."""
        image = _checked_image(item.source)  # refuse before storing anything
        folder = self.folder(labeller)
        target = folder / "images" / item.output_name
        with self._lock:
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp")
                tifffile.imwrite(tmp, image)
                tmp.replace(target)
            if item.index not in self._params:
                self._params[item.index] = _params_of(item.source)
            self.store.set_label(labeller, item.relpath, score)
            self._write_manifest(labeller, folder)
        return folder / MANIFEST_NAME

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
        who = check_name(body.name, "labeller name")
        labels = store.labels(who)
        first = next((i for i, it in enumerate(items) if it.relpath not in labels), 0)
        return JSONResponse(state(who, first), headers=_NO_STORE)

    @app.get("/api/label/item/{index}")
    def get_item(index: int, who: str = Query(min_length=1, max_length=64)) -> JSONResponse:
        return JSONResponse(state(check_name(who, "labeller name"), index), headers=_NO_STORE)

    @app.post("/api/label/score")
    def score(body: LabelScore) -> JSONResponse:
        who = check_name(body.who, "labeller name")
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
