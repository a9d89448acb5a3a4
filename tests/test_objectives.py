"""Objectives on constructed frames with known answers; scalarisation; Pareto front; plugins."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from stedloop.config import load_config
from stedloop.errors import ConfigError, DataError, PluginError
from stedloop.frame import Frame, Region
from stedloop.objectives import build_objectives
from stedloop.objectives.base import foreground_mask, otsu_threshold
from stedloop.objectives.bleaching import BleachingObjective
from stedloop.objectives.pareto import dominates, pareto_front
from stedloop.objectives.resolution import ResolutionObjective, frc_resolution_nm
from stedloop.objectives.scalarise import CHEBYSHEV_RHO, Scalariser
from stedloop.objectives.signal import SignalRatioObjective
from stedloop.params import ImagingParams

PARAMS = ImagingParams(10.0, 5.0, 100.0)


def make_frame(before: np.ndarray, sted: np.ndarray, after: np.ndarray) -> Frame:
    return Frame(before, sted, after, PARAMS, Region(0, 0, *before.shape), 20.0, 0.0, 1.0)


def structure(size: int = 224, seed: int = 0) -> np.ndarray:
    """Random thin lines and dots: detail at every scale."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size))
    for _ in range(40):
        y, x = rng.integers(0, size, 2)
        truth[y, max(0, x - 30) : x + 30] += 1
        truth[max(0, y - 30) : y + 30, x] += 1
    truth[rng.integers(0, size, 300), rng.integers(0, size, 300)] += 3
    return truth


def blurred_counts(fwhm_nm: float, photons: float = 60.0, seed: int = 1) -> np.ndarray:
    sigma_px = fwhm_nm / 20.0 / 2.3548
    image = ndimage.gaussian_filter(structure(), sigma_px)
    image = photons * image / image.max()
    return np.random.default_rng(seed).poisson(image + 0.5).astype(np.uint16)


def test_frc_resolution_grows_with_blur_and_tracks_the_psf_width() -> None:
    widths = [60.0, 120.0, 240.0]
    resolutions = [frc_resolution_nm(blurred_counts(w), 20.0) for w in widths]
    assert resolutions[0] < resolutions[1] < resolutions[2], resolutions
    for width, res in zip(widths, resolutions, strict=True):
        assert 0.5 * width < res < 2.5 * width, (width, res)


def test_frc_checkerboard_cannot_go_below_four_pixels() -> None:
    image = blurred_counts(50.0, photons=500)
    assert frc_resolution_nm(image, 20.0, split="checkerboard") >= 80.0 - 1e-9
    assert frc_resolution_nm(image, 20.0) < 80.0  # the binomial split can


def test_frc_rejects_bad_images_and_is_worst_case_for_pure_noise() -> None:
    with pytest.raises(DataError, match="constant"):
        frc_resolution_nm(np.ones((64, 64)), 20.0)
    with pytest.raises(DataError, match="NaN"):
        frc_resolution_nm(np.full((64, 64), np.nan), 20.0)
    with pytest.raises(DataError, match="2-D"):
        frc_resolution_nm(np.ones(64), 20.0)
    noise = np.random.default_rng(0).poisson(2.0, (128, 128))
    # No structure: no finer detail than the field (128 px x 20 nm) is resolved.
    assert frc_resolution_nm(noise, 20.0) > 400


def test_signal_ratio_and_bleaching_on_known_images() -> None:
    confocal = np.zeros((64, 64))
    confocal[16:48, 16:48] = 100.0
    sted = np.where(confocal > 0, 30.0, 5.0)
    after = confocal * 0.8
    frame = make_frame(confocal, sted, after)
    # (p75 of STED foreground 30 - mean STED background 5) / p75 confocal foreground 100
    assert SignalRatioObjective().evaluate(frame) == pytest.approx(0.25, abs=0.02)
    assert BleachingObjective().evaluate(frame) == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("counts_per_pixel", [0.1, 1.0, 20.0])
def test_bleaching_of_an_unbleached_low_count_frame_is_near_zero(counts_per_pixel: float) -> None:
    # Before and after are independent photon-count images of the same (unbleached) sample.
    # A mask chosen on the image before alone picks pixels that noise made bright there and
    # reads this as bleaching (+0.54 at 0.1 counts per pixel, +0.11 at 1, measured).
    rate = ndimage.gaussian_filter(structure(seed=3), 4.0)
    rate *= counts_per_pixel / rate.mean()
    rng = np.random.default_rng(5)
    readings = [
        BleachingObjective().evaluate(make_frame(rng.poisson(rate), rate, rng.poisson(rate)))
        for _ in range(20)
    ]
    assert abs(float(np.mean(readings))) < 0.02, readings
    assert max(readings) < 0.15, readings


def test_bleaching_reads_a_known_loss_at_low_counts() -> None:
    rate = ndimage.gaussian_filter(structure(seed=4), 4.0)
    rate *= 0.3 / rate.mean()
    rng = np.random.default_rng(6)
    readings = [
        BleachingObjective().evaluate(make_frame(rng.poisson(rate), rate, rng.poisson(0.7 * rate)))
        for _ in range(20)
    ]
    assert float(np.mean(readings)) == pytest.approx(0.3, abs=0.03), readings


def test_otsu_and_foreground_need_contrast() -> None:
    bimodal = np.concatenate([np.full(100, 2.0), np.full(100, 10.0)])
    assert 2.0 <= otsu_threshold(bimodal) < 10.0
    with pytest.raises(DataError):
        foreground_mask(np.zeros((32, 32)))


def test_resolution_objective_on_a_frame() -> None:
    image = blurred_counts(80.0)
    objective = ResolutionObjective()
    assert (objective.name, objective.unit, objective.direction) == ("resolution", "nm", "minimize")
    assert 40 < objective.evaluate(make_frame(image, image, image)) < 250


class Named:
    API_VERSION = "2.0"

    def __init__(self, name: str, direction: str, bounds: tuple[float, float]) -> None:
        self.name, self.direction, self.bounds, self.unit = name, direction, bounds, "u"

    def evaluate(self, frame: Frame) -> float:  # pragma: no cover - not called
        return 0.0


def test_weighted_sum_normalises_by_bounds_and_direction() -> None:
    objectives = [Named("q", "maximize", (0, 1)), Named("res", "minimize", (40, 240))]
    s = Scalariser(objectives, {"q": 3.0, "res": 1.0})
    # q utility 0.5, res utility (240-90)/200 = 0.75; weights 0.75 / 0.25.
    assert s.combine({"q": 0.5, "res": 90.0}) == pytest.approx(0.75 * 0.5 + 0.25 * 0.75)
    assert s.combine({"q": 2.0, "res": 10.0}) == pytest.approx(1.0)  # clipped at the ideal
    assert math.isnan(s.combine({"q": 0.5, "res": float("nan")}))
    assert math.isnan(s.combine({"q": 0.5}))


def test_chebyshev_is_driven_by_the_worst_weighted_shortfall() -> None:
    objectives = [Named("a", "maximize", (0, 1)), Named("b", "maximize", (0, 1))]
    s = Scalariser(objectives, method="chebyshev")
    # shortfalls 0.5*(1-0.9)=0.05 and 0.5*(1-0.3)=0.35
    expected = 1 - 0.35 - CHEBYSHEV_RHO * (0.05 + 0.35)
    assert s.combine({"a": 0.9, "b": 0.3}) == pytest.approx(expected)
    # A balanced point beats a lopsided one with the same weighted sum.
    assert s.combine({"a": 0.6, "b": 0.6}) > s.combine({"a": 0.9, "b": 0.3})


def test_product_uses_weights_as_exponents() -> None:
    objectives = [Named("q", "maximize", (0, 1)), Named("bleach", "minimize", (0, 1))]
    s = Scalariser(objectives, {"bleach": 9.0}, method="product")
    assert s.weights == {"q": 1.0, "bleach": 9.0}  # not normalised
    assert s.combine({"q": 0.8, "bleach": 0.1}) == pytest.approx(0.8 * 0.9**9)
    # Less quality with far less bleaching wins, unlike an equal-weight sum.
    assert s.combine({"q": 0.6, "bleach": 0.02}) > s.combine({"q": 0.8, "bleach": 0.1})
    assert s.combine({"q": 1.0, "bleach": 0.0}) == pytest.approx(1.0)
    assert s.combine({"q": 0.9, "bleach": 1.0}) == 0.0
    assert math.isnan(s.combine({"q": 0.9, "bleach": float("nan")}))


def test_scalariser_refuses_unknown_names_and_bad_weights() -> None:
    objectives = [Named("q", "maximize", (0, 1))]
    with pytest.raises(ConfigError, match="not among"):
        Scalariser(objectives, {"typo": 1.0})
    with pytest.raises(ConfigError, match="positive sum"):
        Scalariser(objectives, {"q": 0.0})
    with pytest.raises(ConfigError, match="lo < hi"):
        Scalariser(objectives, bounds={"q": (1.0, 0.0)})


def test_pareto_front_respects_directions_and_skips_missing_values() -> None:
    directions = {"q": "maximize", "res": "minimize"}
    values = [
        {"q": 0.9, "res": 100.0},  # front
        {"q": 0.5, "res": 60.0},  # front
        {"q": 0.4, "res": 110.0},  # dominated by both
        {"q": 0.95, "res": None},  # incomplete: left out
        {"q": 0.5, "res": 60.0},  # equal to the second: not dominated, kept
    ]
    front = pareto_front(list(range(5)), values, directions)
    assert front == [0, 1, 4]
    assert dominates(values[0], values[2], directions)
    assert not dominates(values[1], values[4], directions)


def test_build_objectives_through_entry_points() -> None:
    config = load_config(overrides={"objectives": {"names": ["resolution", "bleaching"]}}).config
    objectives = build_objectives(config)
    assert [o.name for o in objectives] == ["resolution", "bleaching"]
    config = load_config(overrides={"objectives": {"names": ["nonexistent"]}}).config
    with pytest.raises(PluginError, match="nonexistent"):
        build_objectives(config)


def test_quality_objective_uses_the_given_scorer_and_a_real_network() -> None:
    import torch

    from stedloop.quality.checkpoint import Checkpoint, Normalization
    from stedloop.quality.model import QualityNet
    from stedloop.quality.scorer import CNNScorer

    torch.manual_seed(0)
    scorer = CNNScorer(Checkpoint(QualityNet(), Normalization(0.0, 1e-3)), device="cpu")
    config = load_config(overrides={"objectives": {"names": ["quality"]}}).config
    (objective,) = build_objectives(config, scorer=scorer)
    image = blurred_counts(80.0)
    value = objective.evaluate(make_frame(image, image, image))
    assert 0.0 <= value <= 1.0
    assert objective.scorer is scorer
