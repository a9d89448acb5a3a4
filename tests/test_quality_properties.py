"""What the shipped quality network must do on real and simulated STED frames.

- every step of photon starvation at equal mean, and every step of blur, scores lower, and the
  worst level at most half of the original (the degradation recipe of docs/quality.md);
- a pure gain (the same photons times 2, 4 or 1/2, within uint16) moves the score by <= 0.05;
- the same counts without the structure (pixels shuffled, or phases randomised) score at most
  half of the original.

The real frames are the two of ../shared/data/real_sted (skipped only when that is absent);
the simulated ones are made here by the simulator, so these properties are always tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from stedloop.quality import shipped_model_path
from stedloop.quality.degradations import evaluate_degradations
from stedloop.quality.probes import (
    Structureless,
    gained,
    good_simulated_frames,
    structureless,
    write_degradation_series,
)

REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_sted"
if not REAL_DIR.is_dir():
    REAL_DIR = Path("/work/shared/data/real_sted")


@pytest.fixture(scope="module")
def scorer():
    from stedloop.quality.scorer import CNNScorer

    if not shipped_model_path().is_file():
        pytest.skip("the shipped quality model is missing")
    return CNNScorer.from_checkpoint(None, device="cpu")


@pytest.fixture(scope="module")
def simulated_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Degradation series of three simulated STED frames of actin at good settings."""
    folder = tmp_path_factory.mktemp("simulated-degradations")
    return write_degradation_series(folder, good_simulated_frames())


def real_folder() -> Path:
    folder = REAL_DIR / "degradations"
    if not folder.is_dir():
        pytest.skip("shared/data/real_sted not present")
    return folder


def check_degradations(folder: Path, scorer) -> None:
    report = evaluate_degradations(folder, scorer, "shipped")
    for scored in report.series:
        scores = " ".join(f"{s:.3f}" for s in scored.scores)
        where = f"{scored.series.frame} {scored.series.family}: {scores}"
        assert scored.pairs_in_order == scored.n_pairs, where
        assert scored.ratio is not None and scored.ratio <= 0.5, where


def test_real_degradations_score_lower_at_every_step(scorer) -> None:
    check_degradations(real_folder(), scorer)


@pytest.mark.xfail(
    strict=True,
    reason="known gap (issue 15): the shipped model scores the first blur step (sigma 1 px) of "
    "one simulated frame 0.01 above the original",
)
def test_simulated_degradations_score_lower_at_every_step(scorer, simulated_folder: Path) -> None:
    check_degradations(simulated_folder, scorer)


def originals(simulated_folder: Path) -> list[np.ndarray]:
    frames = [tifffile.imread(p / "noise_0.tif") for p in sorted(simulated_folder.iterdir())]
    if (REAL_DIR / "degradations").is_dir():
        frames += [tifffile.imread(p) for p in sorted(REAL_DIR.glob("*.tif"))]
    return frames


@pytest.mark.parametrize("gain", [0.5, 2.0, 4.0])
def test_a_pure_gain_does_not_change_the_score(scorer, simulated_folder: Path, gain: float) -> None:
    for image in originals(simulated_folder):
        before, after = scorer.score([image, gained(image, gain)])
        assert abs(after - before) <= 0.05, (gain, before, after)


@pytest.mark.parametrize(
    "how",
    [
        "shuffled",
        pytest.param(
            "phase-randomised",
            marks=pytest.mark.xfail(
                strict=True,
                reason="known gap (issue 15): the shipped model scores a phase-randomised frame "
                "at 0.8-0.99 of the original (a fine-tuning that brings it to 0.15-0.20 costs "
                "the gain-1/2 property; benchmarks/RESULTS.md)",
            ),
        ),
    ],
)
def test_the_same_counts_without_structure_score_low(
    scorer, simulated_folder: Path, how: Structureless
) -> None:
    rng = np.random.default_rng(0)
    for image in originals(simulated_folder):
        counts = image.astype(np.float64)
        original, score = scorer.score([counts, structureless(counts, how, rng)])
        assert score <= 0.5 * original, (how, original, score)
