"""Labelling mode: scores from the web API become a data set that `stedloop train` reads."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient
from study_helpers import write_image

from stedloop.frame import Frame, Region
from stedloop.params import ImagingParams
from stedloop.quality.dataset import load_dataset, read_tiff_image
from stedloop.study.app import create_app
from stedloop.study.store import StudyStore
from stedloop.tiffio import write_frame_tiff


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "new"
    write_image(folder / "a.tif", seed=1)
    write_image(folder / "sub" / "a.tif", seed=2)  # same name in a sub-folder: no clash
    sted = np.full((64, 64), 7, np.uint16)
    sted[5:20, 5:20] = 300
    frame = Frame(
        confocal_before=np.full((64, 64), 5, np.uint16),
        sted=sted,
        confocal_after=np.full((64, 64), 9, np.uint16),
        params=ImagingParams(dwell_time_us=10.0, excitation_uw=12.5, depletion_mw=150.0),
        region=Region(0.0, 0.0, 64, 64),
        pixel_size_nm=20.0,
        started_at_s=1.0,
        finished_at_s=2.0,
    )
    write_frame_tiff(folder / "frame.ome.tif", frame)  # a stedloop frame: STED channel + params
    return folder


def _client(tmp_path: Path, source: Path) -> tuple[TestClient, StudyStore]:
    store = StudyStore(tmp_path / "labels.sqlite")
    app = create_app(
        mode="label", store=store, label_source=source, label_out=tmp_path / "out",
        label_structure="actin",
    )  # fmt: skip
    return TestClient(app), store


def test_labels_become_a_training_dataset(tmp_path: Path, source: Path) -> None:
    client, store = _client(tmp_path, source)
    assert "Label image quality" in client.get("/").text
    s = client.post("/api/label/start", json={"name": "Dr Who"}).json()
    assert (s["index"], s["total"], s["labelled"], s["score"]) == (0, 3, 0, None)
    assert client.get(s["image"]).content.startswith(b"\x89PNG")
    scores = {}
    for index, score in [(0, 0.25), (2, 1.0), (1, 0.0)]:
        r = client.post("/api/label/score", json={"who": "Dr Who", "item": index, "score": score})
        assert r.status_code == 200, r.text
        scores[r.json()["name"]] = score
    # Changing one's mind replaces the score (no duplicate row).
    client.post("/api/label/score", json={"who": "Dr Who", "item": 0, "score": 0.3})
    scores[s["name"]] = 0.3

    dataset = tmp_path / "out" / "Dr_Who"
    items = load_dataset(dataset)  # the quality area's own reader
    assert len(items) == 3
    assert sorted(i.score for i in items) == sorted(scores.values())
    assert {i.structure for i in items} == {"actin"}
    for item in items:
        image = read_tiff_image(item.path)
        assert image.dtype == np.uint16 and image.shape == (64, 64)
    sted = next(i for i in items if "frame" in i.relpath)
    assert read_tiff_image(sted.path).max() == 300  # the STED channel, not confocal
    assert sted.params == {"dwell_time_us": 10.0, "excitation_uw": 12.5, "depletion_mw": 150.0}
    assert all(i.params == {} for i in items if i is not sted)
    with (dataset / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["labeller"] for r in rows} == {"Dr Who"}
    assert all(r["labelled_at"] for r in rows)
    assert len({r["path"] for r in rows}) == 3
    # Resuming: the labeller comes back to the first unlabelled image (none left -> 0).
    again = client.post("/api/label/start", json={"name": "Dr Who"}).json()
    assert again["labelled"] == 3
    store.close()


def test_label_input_errors(tmp_path: Path, source: Path) -> None:
    client, store = _client(tmp_path, source)
    assert (
        client.post("/api/label/score", json={"who": "x", "item": 0, "score": 1.5}).status_code
        == 422
    )
    assert (
        client.post("/api/label/score", json={"who": "x", "item": 99, "score": 0.5}).status_code
        == 404
    )
    assert client.post("/api/label/start", json={"name": "<x>"}).status_code == 400
    tifffile.imwrite(source / "zz_float.tif", np.ones((8, 8), np.float32))
    client2, store2 = _client(tmp_path / "again", source)
    last = client2.post("/api/label/start", json={"name": "x"}).json()["total"] - 1
    bad = client2.post("/api/label/score", json={"who": "x", "item": last, "score": 0.5})
    assert bad.status_code == 400 and "16-bit" in bad.json()["error"]
    assert not (tmp_path / "again" / "out" / "x" / "manifest.csv").exists()
    store.close()
    store2.close()


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    from stedloop.errors import DataError

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .tif"):
        create_app(
            mode="label", store=StudyStore(tmp_path / "l.sqlite"),
            label_source=tmp_path / "empty", label_out=tmp_path / "out",
        )  # fmt: skip
