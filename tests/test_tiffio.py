"""OME-TIFF frame files: round trip, what Fiji/napari need, atomic writes, bad files."""

from __future__ import annotations

import errno
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from stedloop.driver import AcquireRequest
from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions
from stedloop.errors import DataError
from stedloop.frame import Frame, Region
from stedloop.params import ImagingParams
from stedloop.tiffio import (
    read_frame_tiff,
    read_image_tiff,
    read_sted_image,
    write_frame_tiff,
)
from stedloop.writeonce import publish_new

OME_NS = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"


@pytest.fixture(scope="module")
def frame() -> Frame:
    driver = SimulatorDriver(SimulatorOptions(sample_fields=1, include_ground_truth=True))
    driver.connect()
    return driver.acquire(
        AcquireRequest(ImagingParams(12.5, 4.0, 120.0), Region(0.0, 0.0, 224, 224))
    )


def test_round_trip_keeps_images_params_region_times_metadata(frame: Frame, tmp_path: Path) -> None:
    path = write_frame_tiff(tmp_path / "0001.ome.tif", frame, {"session": "s1", "frame": 1})
    assert path == tmp_path / "0001.ome.tif"
    back = read_frame_tiff(path)
    np.testing.assert_array_equal(back.stack(), frame.stack())
    assert back.sted.dtype == np.uint16
    assert back.params == frame.params
    assert back.region == frame.region
    assert back.pixel_size_nm == frame.pixel_size_nm
    assert back.started_at_s == frame.started_at_s
    assert back.finished_at_s == frame.finished_at_s
    assert back.metadata["extra"] == {"session": "s1", "frame": 1}
    assert back.metadata["effective_fwhm_nm"] == pytest.approx(frame.metadata["effective_fwhm_nm"])
    assert back.metadata["structure"] == "actin"
    assert "ground_truth" not in back.metadata  # arrays are not stored in the description


def test_file_is_ome_with_channels_and_physical_pixel_size(frame: Frame, tmp_path: Path) -> None:
    path = write_frame_tiff(tmp_path / "f.ome.tif", frame)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        assert tif.series[0].axes == "CYX"
        assert tif.series[0].dtype == np.uint16
        root = ET.fromstring(tif.ome_metadata)
    pixels = root.find(f"{OME_NS}Image/{OME_NS}Pixels")
    assert pixels is not None
    assert float(pixels.get("PhysicalSizeX")) == pytest.approx(0.02)
    assert float(pixels.get("PhysicalSizeY")) == pytest.approx(0.02)
    assert pixels.get("PhysicalSizeXUnit") == "µm"
    names = [c.get("Name") for c in pixels.findall(f"{OME_NS}Channel")]
    assert names == ["confocal_before", "sted", "confocal_after"]
    annotations = {m.get("K"): m.text for m in root.iter(f"{OME_NS}M")}
    assert annotations["depletion_mw (mW)"] == "120"
    assert annotations["dwell_time_us (µs)"] == "12.5"


def test_write_is_atomic_and_leaves_no_temporary_files(frame: Frame, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    path = folder / "a.ome.tif"
    path.write_bytes(b"old content")
    write_frame_tiff(path, frame, overwrite=True)  # only when asked (`simulate --overwrite`)
    assert read_frame_tiff(path).params == frame.params
    assert sorted(p.name for p in folder.iterdir()) == ["a.ome.tif"]


def test_an_existing_file_is_never_replaced_unless_asked(frame: Frame, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    path = folder / "a.ome.tif"
    path.write_bytes(b"recorded")
    with pytest.raises(DataError, match="refusing to overwrite"):
        write_frame_tiff(path, frame)
    assert path.read_bytes() == b"recorded"
    assert sorted(p.name for p in folder.iterdir()) == ["a.ome.tif"]


def test_a_file_appearing_while_writing_is_not_replaced(
    frame: Frame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exclusive rename itself refuses, not only the check before writing."""
    folder = tmp_path / "frames"
    folder.mkdir()
    path = folder / "a.ome.tif"
    real = tifffile.imwrite

    def imwrite(file: Any, *args: Any, **kwargs: Any) -> Any:
        path.write_bytes(b"written meanwhile")
        return real(file, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", imwrite)
    with pytest.raises(DataError, match="refusing to overwrite"):
        write_frame_tiff(path, frame)
    assert path.read_bytes() == b"written meanwhile"
    assert sorted(p.name for p in folder.iterdir()) == ["a.ome.tif"]


def test_a_full_disk_raises_oserror_and_leaves_no_temporary_file(
    frame: Frame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def imwrite(file: Any, *args: Any, **kwargs: Any) -> Any:
        Path(file).write_bytes(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(tifffile, "imwrite", imwrite)
    folder = tmp_path / "frames"
    folder.mkdir()
    with pytest.raises(OSError, match="No space left"):
        write_frame_tiff(folder / "a.ome.tif", frame)
    assert list(folder.iterdir()) == []


def test_failed_write_leaves_old_file_and_no_temporary(frame: Frame, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    path = folder / "b.ome.tif"
    path.write_bytes(b"old content")
    bad = Frame(
        confocal_before=np.full((8, 8), 70000, np.int64),
        sted=np.zeros((8, 8), np.int64),
        confocal_after=np.zeros((8, 8), np.int64),
        params=frame.params,
        region=frame.region,
        pixel_size_nm=20.0,
        started_at_s=0.0,
        finished_at_s=1.0,
    )
    with pytest.raises(DataError, match="uint16"):
        write_frame_tiff(path, bad)
    assert path.read_bytes() == b"old content"
    assert sorted(p.name for p in folder.iterdir()) == ["b.ome.tif"]


def test_missing_folder_is_a_data_error(frame: Frame, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        write_frame_tiff(tmp_path / "nope" / "f.ome.tif", frame)


def test_corrupt_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.ome.tif"
    path.write_bytes(b"II*\x00garbage that is not a tiff")
    with pytest.raises(DataError, match="broken.ome.tif"):
        read_frame_tiff(path)
    with pytest.raises(DataError, match="broken.ome.tif"):
        read_image_tiff(path)


def test_truncated_frame_file_names_the_file(frame: Frame, tmp_path: Path) -> None:
    path = write_frame_tiff(tmp_path / "t.ome.tif", frame)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="t.ome.tif"):
        read_frame_tiff(path)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing.tif"):
        read_image_tiff(tmp_path / "missing.tif")


def test_plain_tiff_is_not_a_frame_but_is_an_image(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    image = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    tifffile.imwrite(path, image)
    np.testing.assert_array_equal(read_image_tiff(path), image)
    with pytest.raises(DataError, match="plain.tif"):
        read_frame_tiff(path)


def test_read_image_refuses_stacks(frame: Frame, tmp_path: Path) -> None:
    path = write_frame_tiff(tmp_path / "stack.ome.tif", frame)
    with pytest.raises(DataError, match="2-D"):
        read_image_tiff(path)


def test_reads_the_real_frames_when_present() -> None:
    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_sted"
    files = sorted(folder.glob("*.tif")) if folder.is_dir() else []
    if not files:
        pytest.skip("shared/data/real_sted not present")
    for path in files:
        image = read_image_tiff(path)
        assert image.shape == (224, 224)
        assert image.dtype == np.uint16


def test_path_may_be_a_string(frame: Frame, tmp_path: Path) -> None:
    path = write_frame_tiff(os.fspath(tmp_path / "s.ome.tif"), frame)
    assert isinstance(path, Path) and path.is_file()


def test_a_file_system_without_hard_links_still_never_replaces_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_hard_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    tmp, final = tmp_path / "t.tmp", tmp_path / "f.ome.tif"
    tmp.write_text("first")
    publish_new(tmp, final)
    assert final.read_text() == "first" and not tmp.exists()
    tmp.write_text("second")
    with pytest.raises(FileExistsError):
        publish_new(tmp, final)
    assert final.read_text() == "first" and tmp.read_text() == "second"


# -- read_sted_image: the image to score, also from a frame file ------------------------------


def test_sted_image_of_a_frame_is_its_sted_channel(frame: Frame, tmp_path: Path) -> None:
    path = write_frame_tiff(tmp_path / "f.ome.tif", frame)
    picked = read_sted_image(path)
    assert picked.channel == "sted"
    np.testing.assert_array_equal(picked.image, frame.sted)
    assert not np.array_equal(picked.image, frame.confocal_before)


def test_sted_image_of_a_plain_tiff_is_the_image(tmp_path: Path) -> None:
    image = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    tifffile.imwrite(tmp_path / "plain.tif", image)
    tifffile.imwrite(tmp_path / "one.ome.tif", image[None], ome=True, metadata={"axes": "CYX"})
    for name in ("plain.tif", "one.ome.tif"):  # length-1 axes are dropped
        picked = read_sted_image(tmp_path / name)
        assert picked.channel is None
        np.testing.assert_array_equal(picked.image, image)


def _ome_stack(path: Path, names: list[str] | None, axes: str = "CYX") -> Path:
    shape = (2, len(names or "abc"), 16, 16) if axes == "ZCYX" else (len(names or "abc"), 16, 16)
    stack = (np.arange(np.prod(shape)) % 1000).astype(np.uint16).reshape(shape)
    metadata: dict[str, Any] = {"axes": axes}
    if names is not None:
        metadata["Channel"] = {"Name": names}
    tifffile.imwrite(path, stack, ome=True, photometric="minisblack", metadata=metadata)
    return path


@pytest.mark.parametrize("name", ["STED", "STED 775", "sted_actin", " sted"])
def test_a_channel_named_like_sted_is_picked(name: str, tmp_path: Path) -> None:
    path = _ome_stack(tmp_path / "s.ome.tif", ["confocal", name, "other"])
    picked = read_sted_image(path)
    assert picked.channel == name
    np.testing.assert_array_equal(picked.image, tifffile.imread(path)[1])


@pytest.mark.parametrize(
    ("names", "axes", "expected"),
    [
        (None, "CYX", r"holds 3 images \(unnamed channels\); no channel is named sted"),
        (["confocal_sted", "stedx", "c"], "CYX", "no channel is named sted"),
        (["sted", "STED 2", "c"], "CYX", "holds 2 channels named like sted"),
        (
            ["a", "sted", "c"],
            "ZCYX",
            r"holds 6 images .*axes ZCYX.*more than one image per channel",
        ),
    ],
)
def test_ambiguous_stacks_are_refused_with_a_hint(
    names: list[str] | None, axes: str, expected: str, tmp_path: Path
) -> None:
    path = _ome_stack(tmp_path / "amb.ome.tif", names, axes)
    with pytest.raises(DataError, match=expected) as info:
        read_sted_image(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "extract" in message and "\n" not in message


def test_a_plain_multipage_tiff_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for _ in range(4):  # four separate pages, as other software writes them
            tif.write(np.ones((16, 16), dtype=np.uint16), photometric="minisblack")
    with pytest.raises(DataError, match=r"pages.tif holds 4 separate images.*extract one"):
        read_sted_image(path)


def test_a_damaged_file_is_one_error_and_no_tifffile_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "junk.tif"
    path.write_bytes(b"II*\x00junk")  # a TIFF header pointing nowhere
    with caplog.at_level("WARNING"):
        with pytest.raises(DataError, match="junk.tif is not a readable TIFF"):
            read_sted_image(path)
        with pytest.raises(DataError, match="junk.tif"):
            read_image_tiff(path)
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]
