"""The napari plugin's reader: a session made by a real `stedloop optimize` on the simulator,
opened through napari's own reader machinery (npe2 finds the plugin by its entry point).

The viewer is napari's ``ViewerModel``: the viewer that napari's Qt window draws, with the same
``open`` (plugin lookup, reader, layers) but no OpenGL canvas, which a headless machine without
a display cannot create (Qt's offscreen platform has no OpenGL context there)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

with warnings.catch_warnings():
    # npe2's models still use pydantic-1 idioms: deprecation warnings at import, not ours
    warnings.simplefilter("ignore", DeprecationWarning)
    pytest.importorskip(
        "napari", reason="napari is not installed (pip install -e '.[napari]' to run these tests)"
    )
    import napari.components
    import npe2

from stedloop.napari.reader import get_reader
from stedloop.store.ledger import Ledger
from stedloop.store.session_store import SessionRecord
from stedloop.tiffio import read_frame_tiff

FIELD_PX = 40
PIXEL_NM = 30.0
BUDGET = 3
CONFIG = f"""
[objectives]
names = ["resolution", "bleaching"]

[optimizer]
n_candidates = 100

[session]
retry_delay_s = 0.0

[drivers.simulator]
field_px = {FIELD_PX}
pixel_size_nm = {PIXEL_NM}
sample_fields = 4
acquire_delay_s = 0.0
"""


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a finished 3-frame session, made the way a user makes one."""
    folder = tmp_path_factory.mktemp("napari")
    config = folder / "site.toml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEDLOOP_")}
    env["STEDLOOP_HOME"] = str(folder / "home")
    done = subprocess.run(
        [sys.executable, "-m", "stedloop.cli.main", "optimize", "-c", str(config),
         "--budget", str(BUDGET), "--seed", "5", "--name", "actin"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (path,) = (folder / "home" / "sessions").iterdir()
    return path


@pytest.fixture
def viewer() -> Any:
    # what napari.Viewer does at start: find the installed plugins (npe2 manifests by their
    # `napari.manifest` entry points); ours is there only if stedloop is installed
    npe2.PluginManager.instance().discover()
    return napari.components.ViewerModel()


def ledger_frames(folder: Path) -> list[Any]:
    record = SessionRecord(folder.name, folder, Ledger(folder / "ledger.sqlite", readonly=True))
    try:
        return record.history().done_frames()
    finally:
        record.close()


@pytest.mark.parametrize("target", ["folder", "ledger"])
def test_viewer_opens_a_session_as_confocal_and_sted_stacks(
    session: Path, viewer: Any, target: str
) -> None:
    path = session if target == "folder" else session / "ledger.sqlite"
    layers = viewer.open(str(path), plugin="stedloop")
    assert [layer.name for layer in layers] == ["actin confocal", "actin STED"]
    frames = ledger_frames(session)
    assert len(frames) == BUDGET
    confocal, sted = layers
    for layer, image in ((confocal, "confocal_before"), (sted, "sted")):
        assert layer.data.shape == (BUDGET, FIELD_PX, FIELD_PX)
        # the pixel size of the frames, in µm, on both image axes; frames are the first axis
        assert tuple(layer.scale) == pytest.approx((1.0, PIXEL_NM / 1000, PIXEL_NM / 1000))
        assert [str(u) for u in layer.units] == ["dimensionless", "micrometer", "micrometer"]
        assert tuple(layer.axis_labels) == ("frame", "y", "x")
        # each plane is the frame file's image, in frame order
        for k, record in enumerate(frames):
            stored = read_frame_tiff(session / record.tiff)
            assert np.array_equal(layer.data[k], getattr(stored, image))


def test_metadata_says_what_each_frame_tried_and_scored(session: Path, viewer: Any) -> None:
    (confocal, sted) = viewer.open(str(session), plugin="stedloop")
    meta = sted.metadata["stedloop"]
    assert confocal.metadata["stedloop"] == meta
    assert meta["session"] == session.name
    assert meta["pixel_size_um"] == pytest.approx(PIXEL_NM / 1000)
    assert [o["name"] for o in meta["objectives"]] == ["resolution", "bleaching"]
    frames = ledger_frames(session)
    # one entry per plane of the frame axis, from the ledger
    assert [m["frame"] for m in meta["frames"]] == [f.frame for f in frames] == [0, 1, 2]
    for entry, record in zip(meta["frames"], frames, strict=True):
        assert entry["params"] == record.params
        assert entry["values"] == record.values
        assert set(entry["values"]) == {"resolution", "bleaching"}
        assert entry["combined"] == record.combined
        assert entry["status"] == "told"
        assert set(entry["params_applied"]) == set(record.params)
    assert meta["best_frame"] in {0, 1, 2}


def test_other_paths_are_left_to_other_readers(session: Path, tmp_path: Path) -> None:
    (tmp_path / "other.sqlite").write_bytes(b"")
    assert get_reader(str(tmp_path)) is None  # a folder without a ledger
    assert get_reader(str(tmp_path / "other.sqlite")) is None
    assert get_reader(str(session / "frames")) is None
    assert get_reader(str(session)) is not None


def test_napari_stays_optional() -> None:
    """The reader module and the rest of stedloop load without importing napari (it is an
    optional extra); only napari imports the plugin."""
    code = (
        "import sys, stedloop.napari.reader, stedloop.cli.main, stedloop.server, stedloop.store;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('napari', 'npe2', 'qtpy')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    source = Path(__file__).resolve().parents[1] / "stedloop"
    importers = [
        p.relative_to(source).as_posix()
        for p in source.rglob("*.py")
        if "napari" not in p.relative_to(source).parts[:1]
        and any(
            line.startswith(("import napari", "from napari", "import npe2", "from npe2"))
            for line in p.read_text().splitlines()
        )
    ]
    assert importers == []
