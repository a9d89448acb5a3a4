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
from stedloop.study.labelling import labeller_folder_name, legacy_folder_name
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

    dataset = Path(s["dataset"])
    assert dataset.parent == tmp_path / "out" and dataset.name.startswith("Dr_Who-")
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
    assert not (tmp_path / "again" / "out" / labeller_folder_name("x") / "manifest.csv").exists()
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


def _manifest_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_look_alike_labellers_never_share_a_folder(tmp_path: Path, source: Path) -> None:
    # The first pairs shared a folder before (slug "a_b", "labeller"), and overwrote each
    # other's manifest; "Anna"/"anna" would share one on a case-insensitive disk.
    client, store = _client(tmp_path, source)
    names = ["a b", "a_b", "a@b", "Anna", "anna", "x.", "x"]
    folders = {}
    for score_index, name in enumerate(names):
        started = client.post("/api/label/start", json={"name": name}).json()
        r = client.post(
            "/api/label/score", json={"who": name, "item": 0, "score": score_index / 10}
        )
        assert r.status_code == 200, r.text
        folders[name] = Path(started["dataset"])
    assert len({f.name.lower() for f in folders.values()}) == len(names)
    for score_index, name in enumerate(names):
        rows = _manifest_rows(folders[name])
        assert [(r["labeller"], float(r["score"])) for r in rows] == [(name, score_index / 10)]
        assert len(load_dataset(folders[name])) == 1
    store.close()


@pytest.mark.parametrize("name", [".", "..", "'", "- -", "@", "_"])
def test_names_without_a_letter_or_digit_are_refused(
    tmp_path: Path, source: Path, name: str
) -> None:
    client, store = _client(tmp_path, source)
    started = client.post("/api/label/start", json={"name": name})
    assert started.status_code == 400 and "letter or digit" in started.json()["error"]
    scored = client.post("/api/label/score", json={"who": name, "item": 0, "score": 0.5})
    assert scored.status_code == 400
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    store.close()


def test_an_old_style_folder_is_taken_over_by_its_own_labeller_only(
    tmp_path: Path, source: Path
) -> None:
    # Before the hash, "a b" labelled two images into out/a_b/ (same code path, old name).
    client, store = _client(tmp_path, source)
    for index, score in [(0, 0.2), (1, 0.4)]:
        client.post("/api/label/score", json={"who": "a b", "item": index, "score": score})
    new_folder = tmp_path / "out" / labeller_folder_name("a b")
    legacy = tmp_path / "out" / legacy_folder_name("a b")
    new_folder.rename(legacy)
    assert legacy.name == "a_b"

    # Its look-alike "a_b" must not take it, nor write into it.
    client.post("/api/label/score", json={"who": "a_b", "item": 2, "score": 0.9})
    assert {r["labeller"] for r in _manifest_rows(legacy)} == {"a b"}
    assert len(_manifest_rows(tmp_path / "out" / labeller_folder_name("a_b"))) == 1

    # Its owner's next score moves it to the new name, with every earlier score and image.
    client.post("/api/label/score", json={"who": "a b", "item": 2, "score": 0.6})
    assert not legacy.exists()
    items = load_dataset(new_folder)
    assert sorted(i.score for i in items) == [0.2, 0.4, 0.6]
    assert all(i.path.is_file() for i in items)
    store.close()


def test_a_folder_holding_someone_elses_scores_is_never_written(
    tmp_path: Path, source: Path
) -> None:
    client, store = _client(tmp_path, source)
    client.post("/api/label/score", json={"who": "ann", "item": 0, "score": 0.5})
    ann = tmp_path / "out" / labeller_folder_name("ann")
    bob = tmp_path / "out" / labeller_folder_name("bob")
    ann.rename(bob)  # e.g. copied by hand under the wrong name
    r = client.post("/api/label/score", json={"who": "bob", "item": 1, "score": 0.7})
    assert r.status_code == 400 and "holds the scores of 'ann'" in r.json()["error"]
    assert {row["labeller"] for row in _manifest_rows(bob)} == {"ann"}
    store.close()


def test_stored_labels_without_their_folder_get_their_images_back(
    tmp_path: Path, source: Path
) -> None:
    client, store = _client(tmp_path, source)
    store.set_label("carol", "a.tif", 0.3)  # scored earlier; the folder went missing since
    client.post("/api/label/score", json={"who": "carol", "item": 1, "score": 0.8})
    items = load_dataset(tmp_path / "out" / labeller_folder_name("carol"))
    assert sorted(i.score for i in items) == [0.3, 0.8]
    assert all(i.path.is_file() for i in items)
    store.close()
