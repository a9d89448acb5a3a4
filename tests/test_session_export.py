"""`stedloop session export` on real sessions: the CSV (units, times, paths), the frames'
scores in their OME metadata, the plots and the best-frame figure."""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from stedloop.store.export import objective_column
from stedloop.store.plots import axis_label, robust_limits
from stedloop.tiffio import read_frame_tiff

STEDLOOP = [sys.executable, "-m", "stedloop.cli.main"]
OME_NS = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CONFIG = """
[objectives]
names = {names}

[optimizer]
n_candidates = 200

[session]
retry_delay_s = 0.0

[drivers.simulator]
field_px = 48
sample_fields = 4
acquire_delay_s = 0.0
"""


@dataclass
class Exported:
    id: str
    session: Path  # the session folder
    out: Path  # the export folder
    started: datetime


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEDLOOP_")}
    env["STEDLOOP_HOME"] = str(home)
    done = subprocess.run([*STEDLOOP, *args], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done


def optimize_and_export(folder: Path, names: list[str], budget: int) -> Exported:
    folder.mkdir(parents=True, exist_ok=True)
    home = folder / "home"
    config = folder / "site.toml"
    config.write_text(CONFIG.format(names=repr(names).replace("'", '"')))
    started = datetime.now(timezone.utc)
    run(home, "optimize", "-c", str(config), "--budget", str(budget), "--seed", "3",
        "--name", "actin 640/775")  # fmt: skip
    (session,) = (home / "sessions").iterdir()
    out = folder / "export"
    run(home, "session", "export", session.name, "--out", str(out))
    return Exported(session.name, session, out, started)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return optimize_and_export(tmp_path_factory.mktemp("two"), ["resolution", "bleaching"], 4)


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def map_annotation(path: Path) -> dict[str, str]:
    with tifffile.TiffFile(path) as tif:
        root = ET.fromstring(tif.ome_metadata)
    return {m.get("K"): m.text or "" for m in root.iter(f"{OME_NS}M")}


# -- CSV ------------------------------------------------------------------------------------
def test_csv_objective_columns_carry_the_plugins_units(two: Exported) -> None:
    rows = read_rows(two.out / "frames.csv")
    header = set(rows[0])
    assert {"resolution_nm", "bleaching_fraction", "combined_score"} <= header
    assert not {"resolution", "bleaching", "combined"} & header
    assert all(float(r["resolution_nm"]) > 0 for r in rows)


def test_csv_times_are_iso_8601_utc_from_this_run(two: Exported) -> None:
    rows = read_rows(two.out / "frames.csv")
    assert [int(r["frame"]) for r in rows] == [0, 1, 2, 3]
    for row in rows:
        for column in ("acquired_at_utc", "recorded_at_utc"):
            text = row[column]
            assert text.endswith("Z"), text
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            assert moment.utcoffset() == timedelta(0)
            assert two.started - timedelta(seconds=5) <= moment <= datetime.now(timezone.utc)
        assert row["acquired_at_utc"] <= row["recorded_at_utc"]


def test_csv_tiff_paths_open_from_the_export_folder_wherever_it_goes(
    two: Exported, tmp_path: Path
) -> None:
    moved = tmp_path / "elsewhere"
    shutil.copytree(two.out, moved)  # the export leaves the session folder
    rows = read_rows(moved / "frames.csv")
    for row in rows:
        path = Path(row["tiff"])
        assert not path.is_absolute() and path.parts[0] == "frames"
        frame = read_frame_tiff(moved / path)
        assert frame.params.as_dict()["dwell_time_us"] == pytest.approx(float(row["dwell_time_us"]))


# -- scores in the OME-TIFF -----------------------------------------------------------------
def test_exported_frames_carry_their_scores_in_an_ome_map_annotation(two: Exported) -> None:
    for row in read_rows(two.out / "frames.csv"):
        pairs = map_annotation(two.out / row["tiff"])
        assert pairs["stedloop session"] == two.id
        assert pairs["session name"] == "actin 640/775"
        assert pairs["frame"] == row["frame"]
        assert pairs["status"] == "told"
        assert float(pairs["resolution (nm)"]) == pytest.approx(
            float(row["resolution_nm"]), rel=1e-5
        )
        assert float(pairs["bleaching (fraction)"]) == pytest.approx(
            float(row["bleaching_fraction"]), rel=1e-5
        )
        assert float(pairs["combined score"]) == pytest.approx(
            float(row["combined_score"]), rel=1e-5
        )
        assert "depletion_mw (mW)" in pairs  # the parameters stay beside the scores


def test_the_session_frames_stay_as_written_and_exports_can_be_repeated(
    two: Exported, tmp_path: Path
) -> None:
    originals = sorted((two.session / "frames").glob("*.ome.tif"))
    assert len(originals) == 4
    before = {p: p.read_bytes() for p in originals}
    for path in originals:  # written once, before scoring: no scores in them
        assert "combined score" not in map_annotation(path)
    home = two.session.parent.parent
    run(home, "session", "export", two.id, "--out", str(two.out))  # again: copies replaced
    run(home, "session", "export", two.id, "--no-plots")  # default folder: <session>/export
    assert {p: p.read_bytes() for p in originals} == before
    assert map_annotation(two.session / "export" / "frames" / "0002.ome.tif")["frame"] == "2"


def test_without_frame_copies_the_csv_points_at_the_session_files(
    two: Exported, tmp_path: Path
) -> None:
    out = tmp_path / "lean"
    run(two.session.parent.parent, "session", "export", two.id, "--out", str(out),
        "--no-frames", "--no-plots")  # fmt: skip
    assert not (out / "frames").exists()
    for row in read_rows(out / "frames.csv"):
        path = Path(row["tiff"])
        assert not path.is_absolute()
        assert (out / path).resolve() == (
            two.session / "frames" / f"{int(row['frame']):04d}.ome.tif"
        )


def test_exported_frame_images_equal_the_session_frames(two: Exported) -> None:
    original = read_frame_tiff(two.session / "frames" / "0001.ome.tif")
    copy = read_frame_tiff(two.out / "frames" / "0001.ome.tif")
    assert np.array_equal(original.stack(), copy.stack())
    assert copy.pixel_size_nm == original.pixel_size_nm
    with tifffile.TiffFile(two.out / "frames" / "0001.ome.tif") as tif:
        root = ET.fromstring(tif.ome_metadata)
    # one MapAnnotation, referenced from the image (what Fiji and OMERO show)
    maps = list(root.iter(f"{OME_NS}MapAnnotation"))
    refs = list(root.iter(f"{OME_NS}AnnotationRef"))
    assert len(maps) == 1 and [r.get("ID") for r in refs] == [maps[0].get("ID")]


def ome_schema() -> Any:
    """The OME 2016-06 schema (the copy ome-types ships; dev extras), for xmlschema."""
    xmlschema = pytest.importorskip("xmlschema", reason="pip install -e '.[dev]'")
    spec = importlib.util.find_spec("ome_types")
    if spec is None or spec.origin is None:
        pytest.skip("ome-types (the OME schema) missing: pip install -e '.[dev]'")
    return xmlschema.XMLSchema(str(Path(spec.origin).parent / "ome-2016-06.xsd"))


def test_exported_and_session_frames_are_valid_ome_xml(two: Exported) -> None:
    schema = ome_schema()
    for path in (two.out / "frames" / "0000.ome.tif", two.session / "frames" / "0000.ome.tif"):
        with tifffile.TiffFile(path) as tif:
            xml = tif.ome_metadata
        assert [str(e) for e in schema.iter_errors(xml)] == [], path
    # the validator does see a broken document
    broken = xml.replace("<Pixels ", '<Pixels Colour="red" ', 1)
    assert list(schema.iter_errors(broken))


# -- plots and the figure -------------------------------------------------------------------
def assert_png_with_content(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    pixels = mpimg.imread(path)
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 400, pixels.shape
    assert float(pixels[..., :3].std()) > 0.05  # not a blank canvas


def test_two_objectives_write_plots_and_the_best_frame_figure(two: Exported) -> None:
    for name in ("score_vs_frame.png", "parameter_traces.png", "pareto_front.png"):
        assert_png_with_content(two.out / name)
    assert_png_with_content(two.out / "best_frame.png")
    assert not (two.out / "objective_vs_frame.png").exists()


def test_one_objective_has_no_pareto_plot(tmp_path: Path) -> None:
    one = optimize_and_export(tmp_path, ["resolution"], 2)
    assert not (one.out / "pareto_front.png").exists()
    assert_png_with_content(one.out / "score_vs_frame.png")
    assert_png_with_content(one.out / "best_frame.png")
    assert "resolution_nm" in read_rows(one.out / "frames.csv")[0]

    # a frame file gone from the session: no copy, and its row names no file
    (one.session / "frames" / "0001.ome.tif").unlink()
    again = one.out.parent / "again"
    run(one.session.parent.parent, "session", "export", one.id, "--out", str(again))
    rows = read_rows(again / "frames.csv")
    assert [r["tiff"] for r in rows] == ["frames/0000.ome.tif", ""]
    assert sorted(p.name for p in (again / "frames").iterdir()) == ["0000.ome.tif"]


# -- the pieces ----------------------------------------------------------------------------
def test_objective_columns_and_axis_labels_name_units_and_direction() -> None:
    assert objective_column("resolution", "nm") == "resolution_nm"
    assert objective_column("quality", "score") == "quality_score"
    assert objective_column("signal_ratio", "ratio") == "signal_ratio"
    assert objective_column("sharpness", "") == "sharpness"
    assert objective_column("speed", "µm/s") == "speed_um_s"
    assert axis_label("resolution", "nm", "minimize") == "resolution (nm, lower is better)"
    assert axis_label("quality", "score", "maximize") == "quality (score, higher is better)"


def test_robust_limits_leave_a_far_outlier_out_and_keep_the_bulk() -> None:
    rng = np.random.default_rng(0)
    values = [*rng.uniform(60, 200, 29), 2549.0]  # one frame with no correlation at all
    low, high = robust_limits(values)
    assert high < 2549.0 / 2
    assert low <= min(values[:-1]) and high >= max(values[:-1])
    assert robust_limits([70.0, 76.0, 80.0, 134.0, 193.0, 430.0])[1] > 430.0  # no outlier
    assert robust_limits([5.0, 5.0, 5.0])[0] < 5.0 < robust_limits([5.0, 5.0, 5.0])[1]
