"""`stedloop score` and `stedloop evaluate` read the project's own frame files (issue 15 item 6).

The frames are real OME-TIFFs written by `stedloop simulate` (a subprocess) and by the session
store's writer; the scores are checked against the shipped network scoring the STED image
directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_helpers import run_stedloop

from stedloop.driver import AcquireRequest
from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions
from stedloop.frame import Region
from stedloop.params import ImagingParams
from stedloop.quality import shipped_model_path
from stedloop.quality.dataset import write_manifest
from stedloop.store.frames import write_frame
from stedloop.tiffio import read_frame_tiff

pytestmark = pytest.mark.skipif(
    not shipped_model_path().is_file(), reason="no shipped model installed"
)


@pytest.fixture(scope="module")
def scorer():
    from stedloop.quality.scorer import CNNScorer

    return CNNScorer.from_checkpoint(None, device="cpu")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("sim") / "frames"
    result = run_stedloop("simulate", "--n", "2", "--out", str(out), "--seed", "3", timeout_s=120)
    assert result.returncode == 0, result.stderr
    return sorted(out.glob("*.ome.tif"))


def _session_frames(folder: Path, n: int) -> list[Path]:
    """Frames of different quality written the way a session stores them."""
    driver = SimulatorDriver(SimulatorOptions(sample_fields=4, seed=4))
    driver.connect()
    paths = []
    for i in range(n):
        frame = driver.acquire(
            AcquireRequest(
                ImagingParams(5.0 + 10 * i, 3.0 + i, 60.0 + 60 * i), Region(4.0 * i, 0.0, 224, 224)
            )
        )
        paths.append(write_frame(folder / f"{i:04d}.ome.tif", frame, {"session": "s"}))
    return paths


def _score(*args: str):
    return run_stedloop("score", "--device", "cpu", *args, timeout_s=120)


def test_score_reads_simulate_frames_by_their_sted_channel(simulated: list[Path], scorer) -> None:
    result = _score(*map(str, simulated))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(p) for p in simulated]
    assert all(line["channel"] == "sted" for line in lines)
    expected = scorer.score([read_frame_tiff(p).sted for p in simulated])
    np.testing.assert_allclose([line["score"] for line in lines], expected, atol=1e-6)

    text = _score("--format", "text", str(simulated[0]))
    assert text.returncode == 0, text.stderr
    assert text.stdout.strip() == f"{expected[0]:.4f}  {simulated[0]} [channel sted]"


def test_score_reads_session_frames(tmp_path: Path, scorer) -> None:
    paths = _session_frames(tmp_path / "session" / "frames", 2)
    result = _score(str(tmp_path / "session" / "frames"))
    assert result.returncode == 0, result.stderr
    scores = [json.loads(line)["score"] for line in result.stdout.splitlines()]
    frames = [read_frame_tiff(p) for p in paths]
    np.testing.assert_allclose(scores, scorer.score([f.sted for f in frames]), atol=1e-6)
    # the STED channel, not a confocal one (they score differently)
    confocal = scorer.score([f.confocal_before for f in frames])
    assert not np.allclose(scores, confocal, atol=1e-3)


def test_a_plain_image_has_no_channel_key(tmp_path: Path, simulated: list[Path]) -> None:
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, read_frame_tiff(simulated[0]).sted)
    result = _score(str(plain))
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == {"path", "score"}


def test_one_file_reached_twice_is_scored_once(tmp_path: Path, simulated: list[Path]) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    files = [folder / "a.tif", folder / "b.tif"]
    for path, frame in zip(files, simulated, strict=True):
        tifffile.imwrite(path, read_frame_tiff(frame).sted)
    link = tmp_path / "link.tif"
    os.symlink(files[1], link)
    result = _score(
        str(files[0]),
        str(folder),  # both files again
        str(folder / ".." / folder.name / files[0].name),  # another spelling
        str(link),  # the second file by a link
    )
    assert result.returncode == 0, result.stderr
    paths = [json.loads(line)["path"] for line in result.stdout.splitlines()]
    assert paths == [str(files[0]), str(files[1])]


def test_an_ambiguous_stack_is_refused_with_a_hint(tmp_path: Path, simulated: list[Path]) -> None:
    stack = tmp_path / "stack.ome.tif"
    tifffile.imwrite(
        stack,
        np.stack([read_frame_tiff(simulated[0]).sted] * 2),
        ome=True,
        photometric="minisblack",
        metadata={"axes": "CYX", "Channel": {"Name": ["confocal", "other"]}},
    )
    result = _score(str(stack), str(simulated[0]))
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 1  # the frame is still scored
    errors = result.stderr.strip().splitlines()
    assert errors[0] == (
        f"error: {stack} holds 2 images (channels 'confocal', 'other'); no channel is named "
        "sted; extract one 2-D image"
    )
    assert errors[1] == "error: 1 of 2 file(s) could not be scored"


def test_evaluate_scores_a_labelled_folder_of_session_frames(tmp_path: Path, scorer) -> None:
    data = tmp_path / "labelled"
    paths = _session_frames(data, 4)
    write_manifest(
        data,
        [
            {"path": p.name, "score": s, "structure": "actin"}
            for p, s in zip(paths, (0.2, 0.4, 0.6, 0.8), strict=True)
        ],
    )
    out = tmp_path / "report"
    result = run_stedloop(
        "evaluate", str(shipped_model_path()), str(data), "--out", str(out),
        "--testers", "2", "--bootstrap", "10", "--device", "cpu", timeout_s=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    items = json.loads((out / "metrics.json").read_text())["items"]
    assert [it["path"] for it in items] == [p.name for p in paths]
    expected = scorer.score([read_frame_tiff(p).sted for p in paths])
    np.testing.assert_allclose([it["prediction"] for it in items], expected, atol=1e-6)
