"""The photon scale: counts per photon read from the image, and variants that teach photons."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stedloop.quality.checkpoint import load_checkpoint, save_checkpoint
from stedloop.quality.photon_scale import estimate_photon_scale, to_photons
from stedloop.quality.preprocess import prepare_batch
from stedloop.quality.synth import synthesize

REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_sted"
if not REAL_DIR.is_dir():
    REAL_DIR = Path("/work/shared/data/real_sted")


def structured_rate(seed: int = 0, mean: float = 8.0) -> np.ndarray:
    """Blurred filaments on a dim background: a photon rate with STED-like structure."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    canvas = np.zeros((224, 224))
    for _ in range(40):
        y, x = rng.uniform(0, 224, 2)
        angle = rng.uniform(0, np.pi)
        t = np.arange(-60, 60)
        rows = np.clip(np.rint(y + t * np.sin(angle)), 0, 223).astype(int)
        cols = np.clip(np.rint(x + t * np.cos(angle)), 0, 223).astype(int)
        canvas[rows, cols] += 1.0
    rate = ndimage.gaussian_filter(canvas, 1.3) + 0.05
    return rate * mean / rate.mean()


def test_photon_counts_read_as_one_count_per_photon() -> None:
    # At STED counts (a few photons per pixel); structure finer than the pixel makes brighter
    # frames read higher (see photon_scale.py).
    rng = np.random.default_rng(1)
    for mean in (0.5, 2.0, 8.0):
        counts = rng.poisson(structured_rate(2, mean))
        assert estimate_photon_scale(counts) == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("gain", [0.37, 2.0, 4.0, 100.0])
def test_the_estimate_follows_a_gain_exactly(gain: float) -> None:
    counts = np.random.default_rng(3).poisson(structured_rate(4)).astype(np.float64)
    assert estimate_photon_scale(counts * gain) == pytest.approx(
        gain * estimate_photon_scale(counts), rel=1e-9
    )
    assert np.allclose(to_photons(counts * gain, "estimated"), to_photons(counts, "estimated"))


@pytest.mark.parametrize("fraction", [0.5, 0.2, 0.05, 0.02])
def test_a_starved_frame_brightened_back_reads_as_its_few_photons(fraction: float) -> None:
    # The shared degradations' recipe: Poisson(f * counts), then back to the original mean.
    rng = np.random.default_rng(5)
    counts = rng.poisson(structured_rate(6)).astype(np.float64)
    draw = rng.poisson(fraction * counts).astype(np.float64)
    starved = draw * counts.mean() / draw.mean()
    expected = 1 + 1 / fraction  # the draw's noise plus the original's own
    assert estimate_photon_scale(starved) == pytest.approx(expected, rel=0.15)


def test_blank_or_tiny_images_get_scale_one() -> None:
    assert estimate_photon_scale(np.zeros((224, 224))) == 1.0
    assert estimate_photon_scale(np.ones((2, 2))) == 1.0
    assert to_photons(np.full((8, 8), 3.0), "none")[0, 0] == 3.0


def test_real_frames_read_as_photon_counts_and_their_noise_series_as_starved() -> None:
    if not REAL_DIR.is_dir():
        pytest.skip("shared/data/real_sted not present")
    for series in sorted(p for p in (REAL_DIR / "degradations").iterdir() if p.is_dir()):
        scales = [
            estimate_photon_scale(tifffile.imread(series / f"noise_{k}.tif")) for k in range(5)
        ]
        assert scales[0] == pytest.approx(1.0, abs=0.1)
        for scale, fraction in zip(scales[1:], (0.5, 0.2, 0.05, 0.02), strict=True):
            assert scale == pytest.approx(1 + 1 / fraction, rel=0.1)


def test_prepare_batch_applies_the_photon_scale_only_when_asked() -> None:
    counts = np.random.default_rng(7).poisson(structured_rate(8)).astype(np.float64)
    plain = prepare_batch([counts, counts * 4], 224, 0.0, 1.0, scaling="anscombe")
    assert not np.allclose(plain[0], plain[1])
    photons = prepare_batch(
        [counts, counts * 4], 224, 0.0, 1.0, scaling="anscombe", photon_scale="estimated"
    )
    assert np.allclose(photons[0], photons[1])


def test_checkpoints_store_the_photon_scale_and_older_files_read_as_none(tmp_path: Path) -> None:
    from stedloop.quality import shipped_model_path

    shipped = load_checkpoint(shipped_model_path())
    older = tmp_path / "older.pt"
    save_checkpoint(shipped, older)  # written before the photon scale existed: "none"
    import torch

    payload = torch.load(older, weights_only=True)
    payload["normalization"].pop("photon_scale", None)
    torch.save(payload, older)
    assert load_checkpoint(older).normalization.photon_scale == "none"
    newer = tmp_path / "newer.pt"
    normalization = dataclasses.replace(shipped.normalization, photon_scale="estimated")
    save_checkpoint(dataclasses.replace(shipped, normalization=normalization), newer)
    assert load_checkpoint(newer).normalization.photon_scale == "estimated"
    payload = torch.load(newer, weights_only=True)
    payload["normalization"]["photon_scale"] = "guessed"
    torch.save(payload, newer)
    with pytest.raises(Exception, match="guessed"):
        load_checkpoint(newer)


def test_synth_variants_part_brightness_from_quality(tmp_path: Path) -> None:
    out = tmp_path / "mixed"
    summary = synthesize(out, n=8, structure="actin", seed=21, variants=3)
    assert (summary["n"], summary["variants"]) == (8, 24)
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    parents = {r["path"]: r for r in rows if not r["variant"]}
    kinds = {r["variant"] for r in rows if r["variant"]}
    assert kinds <= {"starved", "gain", "structureless"} and "starved" in kinds
    for row in rows:
        if not row["variant"]:
            continue
        parent = parents[row["parent"]]
        image = tifffile.imread(out / row["path"])
        assert image.dtype == np.uint16 and image.shape == (224, 224)
        if row["variant"] == "gain":
            assert float(row["true_score"]) == float(parent["true_score"])
        elif row["variant"] == "structureless":
            assert float(row["true_score"]) < 0.1
        else:
            assert 0.02 <= float(row["photon_fraction"]) <= 0.5
            assert float(row["true_score"]) <= float(parent["true_score"]) + 1e-9


def test_training_with_the_photon_scale_stores_it_and_a_resume_keeps_it(tmp_path: Path) -> None:
    from test_quality_train import _cfg, make_dataset

    from stedloop.quality.train import paths_beside, train

    data = make_dataset(tmp_path / "data")
    out = tmp_path / "m.pt"
    train(data, out, dataclasses.replace(_cfg(max_epochs=1), photon_scale="estimated"))
    assert load_checkpoint(out).normalization.photon_scale == "estimated"
    first = load_checkpoint(out).normalization
    train(data, out, _cfg(max_epochs=2), resume=paths_beside(out)["resume"])
    assert load_checkpoint(out).normalization == first
