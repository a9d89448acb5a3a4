"""`stedloop evaluate-degradations`: a model checked on controlled degradation series.

The figures are checked twice: on hand-set scores (a scorer that answers by file name, so the
expected share, ratios and medians are worked out below), and on a synthetic folder made with
the recipe of ``shared/data/real_sted/degradations/README.md`` and scored by the shipped
network, where the test recomputes every figure from its own scores. The real folder in
``../shared`` is run when it is there (only that the command runs and reports its figures:
the current model is not expected to pass).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_helpers import run_stedloop
from scipy import ndimage

from stedloop.errors import DataError
from stedloop.frame import Frame, Region
from stedloop.params import ImagingParams
from stedloop.quality import shipped_model_path
from stedloop.quality.degradations import discover_series, evaluate_degradations
from stedloop.tiffio import write_frame_tiff

SHARED_DEGRADATIONS = next(
    (
        p
        for p in (
            Path(__file__).resolve().parents[2] / "shared/data/real_sted/degradations",
            Path("/work/shared/data/real_sted/degradations"),
        )
        if p.is_dir()
    ),
    None,
)
needs_model = pytest.mark.skipif(
    not shipped_model_path().is_file(), reason="no shipped model installed"
)


# -- figures on hand-set scores ----------------------------------------------------------------


class ByNameScorer:
    """Answers each image's score from its file's frame and name."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    def score(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
        assert names is not None and len(names) == len(images)
        return np.array([self.scores[f"{Path(n).parent.name}/{Path(n).name}"] for n in names])


HAND_SCORES = {
    "a": {"noise": [0.8, 0.7, 0.75, 0.5, 0.32], "blur": [0.9, 0.5, 0.2]},
    "b": {"noise": [0.6, 0.6, 0.5, 0.55, 0.65], "blur": [0.0, 0.1, 0.0]},
}


def _write_tiny_series(folder: Path) -> dict[str, float]:
    scores = {}
    rng = np.random.default_rng(0)
    for frame, families in HAND_SCORES.items():
        (folder / frame).mkdir(parents=True)
        for family, values in families.items():
            for level, value in enumerate(values):
                name = f"{family}_{level}.tif"
                tifffile.imwrite(folder / frame / name, rng.integers(0, 50, (8, 8), np.uint16))
                scores[f"{frame}/{name}"] = value
    return scores


def test_figures_on_hand_set_scores(tmp_path: Path) -> None:
    scores = _write_tiny_series(tmp_path / "d")
    (tmp_path / "d" / "a" / "notes.tif").write_bytes(b"")  # not <family>_<level>: ignored
    report = evaluate_degradations(tmp_path / "d", ByNameScorer(scores), "hand")
    figures = report.as_dict()
    # noise: a orders 3 of 4 pairs (0.75 > 0.7), ratio 0.32/0.8; b orders 1 of 4 (a tie is not
    # in order), ratio 0.65/0.6, level 0 not above level 4
    assert figures["families"]["noise"] == {
        "series": 2,
        "pairs_in_order": 4,
        "pairs": 8,
        "ordered_share": 0.5,
        "median_ratio": pytest.approx((0.32 / 0.8 + 0.65 / 0.6) / 2),
        "at_most_half": 1,
        "least_above_most": 1,
    }
    # blur: b's level 0 scores 0, so it has no ratio
    assert figures["families"]["blur"] == {
        "series": 2,
        "pairs_in_order": 3,
        "pairs": 4,
        "ordered_share": 0.75,
        "median_ratio": pytest.approx(0.2 / 0.9),
        "at_most_half": 1,
        "least_above_most": 1,
    }
    assert figures["overall"] == {
        "series": 4,
        "pairs_in_order": 7,
        "pairs": 12,
        "ordered_share": pytest.approx(7 / 12),
        "median_ratio": pytest.approx(0.32 / 0.8),
        "at_most_half": 2,
        "least_above_most": 2,
    }
    assert figures["ignored"] == [str(tmp_path / "d" / "a" / "notes.tif")]
    b_blur = next(s for s in figures["series"] if (s["frame"], s["family"]) == ("b", "blur"))
    assert b_blur["ratio"] is None and b_blur["scores"] == [0.0, 0.1, 0.0]

    text = report.text()
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert rows["noise"] == ["2", "4/8", "0.50", "0.74", "1/2", "1/2"]
    assert rows["blur"] == ["2", "3/4", "0.75", "0.22", "1/2", "1/2"]
    assert rows["all"] == ["4", "7/12", "0.58", "0.40", "2/4", "2/4"]
    series_rows = [line.split() for line in text.splitlines() if line.startswith(("a ", "b "))]
    # blur has levels 0..2 only: its levels 3 and 4 are shown as missing
    assert ["b", "blur", "0.000", "0.100", "0.000", "–", "–", "–", "1/2"] in series_rows
    assert ["a", "noise", "0.800", "0.700", "0.750", "0.500", "0.320", "0.40", "3/4"] in series_rows


def test_files_directly_in_the_folder_are_one_frame(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    for level in range(3):
        tifffile.imwrite(folder / f"bleach_{level}.tiff", np.full((8, 8), level + 1, np.uint16))
    series, ignored = discover_series(folder)
    assert [(s.frame, s.family, s.levels) for s in series] == [("one", "bleach", (0, 1, 2))]
    assert ignored == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([], r"is empty"),
        (["f/README.md", "f/noise-0.tif"], r"no <family>_<level>\.tif files"),
        (["f/noise_1.tif", "f/noise_2.tif"], r"f: noise has no level 0 .*found level\(s\) 1, 2"),
        (["f/noise_0.tif"], r"f: noise has only level 0"),
        (["f/noise_1.tif", "f/noise_01.tif", "f/noise_0.tif"], r"two files for noise level 1"),
    ],
)
def test_unusable_folders_are_refused(tmp_path: Path, files: list[str], expected: str) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    for name in files:
        (folder / name).parent.mkdir(exist_ok=True)
        tifffile.imwrite(folder / name, np.ones((8, 8), np.uint16))
    with pytest.raises(DataError, match=expected):
        discover_series(folder)


# -- the command on a synthetic folder made with the shared recipe -----------------------------

NOISE_FRACTIONS = (1.0, 0.5, 0.2, 0.05, 0.02)
BLUR_SIGMAS_PX = (0, 1, 2, 3, 5)


def _drawn_sample(rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """Photon counts of a few thin bright filaments on a dim background."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    density = np.zeros((size, size))
    for _ in range(12):
        angle, offset = rng.uniform(0, np.pi), rng.uniform(-size / 2, size / 2)
        distance = (xx - size / 2) * np.sin(angle) - (yy - size / 2) * np.cos(angle) - offset
        density += np.exp(-(distance**2) / (2 * 1.2**2))
    return rng.poisson(3 + 60 * density).astype(np.uint16)


def _noise_level(original: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Photon starvation at equal mean (the README's recipe)."""
    if fraction == 1.0:
        return original
    draw = rng.poisson(fraction * original.astype(float)).astype(float)
    return np.round(draw * original.mean() / draw.mean()).astype(np.uint16)


def _blur_level(original: np.ndarray, sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with reflecting edges, drawn again as Poisson counts (the README's)."""
    if sigma_px == 0:
        return original
    blurred = ndimage.gaussian_filter(original.astype(float), sigma_px, mode="reflect")
    return rng.poisson(blurred).astype(np.uint16)


def _frame_of(sted: np.ndarray) -> Frame:
    confocal = (sted // 3).astype(np.uint16)
    return Frame(
        confocal, sted, confocal, ImagingParams(10.0, 5.0, 150.0), Region(0.0, 0.0, 224, 224),
        20.0, 0.0, 1.0,
    )  # fmt: skip


def make_degradation_folder(folder: Path) -> Path:
    """Frame ``plain`` as single-image TIFFs; frame ``session`` as stedloop frame files."""
    rng = np.random.default_rng(7)
    for frame in ("plain", "session"):
        (folder / frame).mkdir(parents=True)
        original = _drawn_sample(rng)
        levels = {
            "noise": [_noise_level(original, f, rng) for f in NOISE_FRACTIONS],
            "blur": [_blur_level(original, s, rng) for s in BLUR_SIGMAS_PX],
        }
        for family, images in levels.items():
            for level, image in enumerate(images):
                if frame == "plain":
                    tifffile.imwrite(folder / frame / f"{family}_{level}.tif", image)
                else:
                    write_frame_tiff(folder / frame / f"{family}_{level}.ome.tif", _frame_of(image))
    return folder


def _recomputed(folder: Path) -> dict[str, dict[str, object]]:
    """Every figure from the test's own scoring of each file with the shipped network."""
    from stedloop.quality.dataset import read_tiff_image
    from stedloop.quality.scorer import CNNScorer

    scorer = CNNScorer.from_checkpoint(None, device="cpu")
    out: dict[str, dict[str, object]] = {}
    for family in ("blur", "noise"):
        in_order = pairs = least_above_most = 0
        ratios, series_scores = [], {}
        for frame in ("plain", "session"):
            suffix = ".tif" if frame == "plain" else ".ome.tif"
            paths = [folder / frame / f"{family}_{k}{suffix}" for k in range(5)]
            s = [scorer.score_one(read_tiff_image(p)) for p in paths]
            series_scores[frame] = s
            in_order += sum(s[k + 1] < s[k] for k in range(4))
            pairs += 4
            ratios.append(s[4] / s[0])
            least_above_most += s[0] > s[4]
        out[family] = {
            "pairs_in_order": in_order,
            "pairs": pairs,
            "median_ratio": float(np.median(ratios)),
            "at_most_half": sum(r <= 0.5 for r in ratios),
            "least_above_most": least_above_most,
            "scores": series_scores,
        }
    return out


@needs_model
def test_command_reports_figures_it_can_be_checked_on(tmp_path: Path) -> None:
    folder = make_degradation_folder(tmp_path / "degradations")
    out = tmp_path / "out"
    result = run_stedloop(
        "evaluate-degradations", str(folder), "--json", "--out", str(out), "--device", "cpu",
        timeout_s=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["model"] == str(shipped_model_path())
    expected = _recomputed(folder)
    for family, want in expected.items():
        got = figures["families"][family]
        assert got["series"] == 2
        assert got["pairs"] == want["pairs"] == 8
        assert got["pairs_in_order"] == want["pairs_in_order"]
        assert got["ordered_share"] == pytest.approx(want["pairs_in_order"] / 8)
        assert got["median_ratio"] == pytest.approx(want["median_ratio"], abs=1e-6)
        assert got["at_most_half"] == want["at_most_half"]
        assert got["least_above_most"] == want["least_above_most"]
    overall = figures["overall"]
    assert overall["pairs_in_order"] == sum(e["pairs_in_order"] for e in expected.values())
    assert overall["pairs"] == 16

    with (out / "scores.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20
    for row in rows:
        want_score = expected[row["family"]]["scores"][row["frame"]][int(row["level"])]
        assert float(row["score"]) == pytest.approx(want_score, abs=1e-5)
        assert (folder / row["path"]).is_file()
    assert (out / "scores_by_level.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    text = run_stedloop("evaluate-degradations", str(folder), "--device", "cpu", timeout_s=120)
    assert text.returncode == 0, text.stderr
    noise_row = next(line for line in text.stdout.splitlines() if line.startswith("noise "))
    assert noise_row.split()[2] == f"{expected['noise']['pairs_in_order']}/8"


@needs_model
def test_an_empty_folder_and_a_bad_image_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_stedloop("evaluate-degradations", str(tmp_path / "empty"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'empty'} is empty; expected one subfolder per frame of "
        "<family>_<level>.tif"
    )
    folder = make_degradation_folder(tmp_path / "d")
    (folder / "plain" / "noise_3.tif").write_bytes(b"II*\x00 cut short")
    result = run_stedloop("evaluate-degradations", str(folder), "--device", "cpu", timeout_s=120)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder / 'plain' / 'noise_3.tif'} ")


@needs_model
@pytest.mark.skipif(SHARED_DEGRADATIONS is None, reason="../shared/data/real_sted absent")
def test_runs_on_the_shared_real_degradations(tmp_path: Path) -> None:
    assert SHARED_DEGRADATIONS is not None
    result = run_stedloop(
        "evaluate-degradations", str(SHARED_DEGRADATIONS), "--json", "--out", str(tmp_path),
        "--device", "cpu", timeout_s=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert sorted(figures["families"]) == ["blur", "noise"]
    for family in figures["families"].values():
        assert family["series"] == 2 and family["pairs"] == 8
        assert 0.0 <= family["ordered_share"] <= 1.0 and family["median_ratio"] is not None
    assert len(figures["series"]) == 4
    assert all(len(s["scores"]) == 5 for s in figures["series"])
    assert (tmp_path / "scores.csv").is_file() and (tmp_path / "scores_by_level.png").is_file()
