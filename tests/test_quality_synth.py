"""The synthetic expert and `stedloop dataset synth` (real simulator, real TIFFs)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from stedloop.errors import DataError
from stedloop.params import ParamSpace, SafetyCaps
from stedloop.quality.dataset import load_dataset
from stedloop.quality.synth import draw_params, expert_measures, synthesize


@pytest.fixture(scope="module")
def actin_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "actin"
    synthesize(out, n=48, structure="actin", seed=11)
    return out


def test_synth_writes_a_loadable_labelled_set(actin_set: Path) -> None:
    items = load_dataset(actin_set)
    assert len(items) == 48
    assert {it.structure for it in items} == {"actin"}
    image = tifffile.imread(items[0].path)
    assert image.dtype == np.uint16 and image.shape == (224, 224)
    rows = list(csv.DictReader((actin_set / "manifest.csv").open()))
    caps = SafetyCaps()
    for row in rows:
        assert 0 <= float(row["score"]) <= 1 and 0 <= float(row["true_score"]) <= 1
        dose = (float(row["excitation_uw"]) * 1e-6 + float(row["depletion_mw"]) * 1e-3) * float(
            row["dwell_time_us"]
        )
        assert dose <= caps.max_light_dose_per_pixel_uj * 1.001
    # fresh regions: no field imaged twice within a sample
    keys = {(r["sample_seed"], r["region_x_um"], r["region_y_um"]) for r in rows}
    assert len(keys) == len(rows)
    labels = np.array([float(r["score"]) for r in rows])
    assert labels.max() - labels.min() > 0.4  # many qualities, not one cluster


def test_no_simple_image_statistic_is_the_label(actin_set: Path) -> None:
    items = load_dataset(actin_set)
    labels = [it.score for it in items]
    images = [tifffile.imread(it.path).astype(np.float64) for it in items]
    for statistic in (np.mean, np.max, np.sum, np.std):
        rho = stats.spearmanr([statistic(im) for im in images], labels)[0]
        assert abs(rho) < 0.8, (statistic.__name__, rho)


def test_expert_prefers_sharp_bright_over_blurred_or_dim() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((224, 224), np.float32)
    truth[:, 100:103] = 5.0  # a filament
    from scipy import ndimage

    def image(fwhm_nm: float, photons: float) -> np.ndarray:
        sigma = fwhm_nm / 20 / 2.355
        return rng.poisson(ndimage.gaussian_filter(truth, sigma) * photons + 0.5)

    sharp = expert_measures(image(60, 30), truth, 20.0, 60.0, 220.0, 0.9)["true_score"]
    blurred = expert_measures(image(220, 30), truth, 20.0, 220.0, 220.0, 0.9)["true_score"]
    dim = expert_measures(image(60, 0.3), truth, 20.0, 60.0, 220.0, 0.9)["true_score"]
    bleached = expert_measures(image(60, 30), truth, 20.0, 60.0, 220.0, 0.2)["true_score"]
    assert sharp > blurred and sharp > dim and sharp > bleached
    assert all(0 <= s <= 1 for s in (sharp, blurred, dim, bleached))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), dose_cap=st.floats(0.5, 40.0))
def test_drawn_params_are_in_space_and_caps(seed: int, dose_cap: float) -> None:
    space = ParamSpace()
    caps = SafetyCaps(max_light_dose_per_pixel_uj=dose_cap)
    params = draw_params(np.random.default_rng(seed), space, caps)
    space.validate_point(params)
    assert caps.allows(params)
    assert math.isfinite(params.light_dose_per_pixel_uj())


def test_synth_refuses_bad_requests(tmp_path: Path, actin_set: Path) -> None:
    with pytest.raises(DataError, match="unknown structure"):
        synthesize(tmp_path / "x", n=2, structure="mitochondria")
    with pytest.raises(DataError, match="already holds"):
        synthesize(actin_set, n=2)
