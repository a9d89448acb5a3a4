"""The parameter space and the laser safety caps: refuse, never clip."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stedloop.errors import ParameterRejected, SafetyCapExceeded
from stedloop.optimize import SearchSpace
from stedloop.params import ImagingParams, ParamRange, ParamSpace, SafetyCaps


def test_imaging_params_refuses_negative_nan_and_non_numbers() -> None:
    with pytest.raises(ParameterRejected, match="depletion_mw must not be negative"):
        ImagingParams(10.0, 1.0, -5.0)
    with pytest.raises(ParameterRejected, match="excitation_uw must be finite"):
        ImagingParams(10.0, math.nan, 5.0)
    with pytest.raises(ParameterRejected, match="dwell_time_us must be a number"):
        ImagingParams("10", 1.0, 5.0)  # type: ignore[arg-type]
    with pytest.raises(ParameterRejected, match="dwell_time_us must be positive"):
        ImagingParams(0.0, 1.0, 5.0)


def test_from_mapping_names_unknown_and_missing_keys() -> None:
    with pytest.raises(ParameterRejected, match="unknown imaging parameter.*dwell_time_ms"):
        ImagingParams.from_mapping({"dwell_time_ms": 1, "excitation_uw": 1, "depletion_mw": 1})
    with pytest.raises(ParameterRejected, match="missing imaging parameter.*depletion_mw"):
        ImagingParams.from_mapping({"dwell_time_us": 1, "excitation_uw": 1})
    params = ImagingParams.from_mapping({"dwell_time_us": 5, "excitation_uw": 2, "depletion_mw": 3})
    assert params.as_vector() == [5.0, 2.0, 3.0]
    assert ImagingParams.from_vector(params.as_vector()) == params


def test_light_dose_per_pixel_in_microjoules() -> None:
    # 100 mW + 10 µW for 10 µs = 0.10001 W * 1e-5 s = 1.0001e-6 J = 1.0001 µJ
    assert ImagingParams(10.0, 10.0, 100.0).light_dose_per_pixel_uj() == pytest.approx(1.0001)


def test_the_optimizer_filter_and_the_caps_check_agree_even_at_the_caps() -> None:
    """The optimizer filters candidates with the caps on whole arrays; it must allow exactly
    what ``SafetyCaps.allows`` allows, round-off at a cap included (one formula, one
    tolerance)."""
    caps = SafetyCaps()  # 350 mW, 25 µW, 20 µJ
    space = SearchSpace(ParamSpace(), caps)
    at, beyond = 1 + 5e-13, 1 + 1e-9  # round-off at the cap, and a real excess
    dose_dwell_us = 20.0 / 0.2  # 200 mW: 20 µJ in 100 µs
    rows = [
        [10.0, 25.0 * at, 0.0],
        [10.0, 25.0 * beyond, 0.0],
        [1.0, 0.5, 350.0 * at],
        [1.0, 0.5, 350.0 * beyond],
        [dose_dwell_us * at, 0.0, 200.0],
        [dose_dwell_us * beyond, 0.0, 200.0],
    ]
    rng = np.random.default_rng(0)
    rows += rng.uniform([1.0, 0.0, 0.0], [100.0, 25.0, 350.0], size=(2000, 3)).tolist()
    values = np.array(rows)
    expected = [caps.allows(ImagingParams(*row)) for row in rows]
    assert expected[:6] == [True, False, True, False, True, False]
    assert space.allowed_values(values).tolist() == expected


def test_caps_refuse_with_every_violation_named_and_never_clip() -> None:
    caps = SafetyCaps(max_depletion_mw=100, max_excitation_uw=5, max_light_dose_per_pixel_uj=1)
    params = ImagingParams(dwell_time_us=50.0, excitation_uw=6.0, depletion_mw=150.0)
    with pytest.raises(SafetyCapExceeded) as info:
        caps.check(params)
    message = str(info.value)
    assert "depletion_mw=150 exceeds the safety cap max_depletion_mw=100" in message
    assert "excitation_uw=6 exceeds" in message
    assert "light dose per pixel" in message
    assert params.depletion_mw == 150.0  # the request itself is untouched
    caps.check(ImagingParams(5.0, 5.0, 100.0))  # exactly at the caps is allowed


def test_param_range_validation() -> None:
    with pytest.raises(ValueError, match="max .* must be greater than min"):
        ParamRange(min=5, max=1)
    with pytest.raises(ValueError, match="log_scale needs min > 0"):
        ParamRange(min=0, max=1, log_scale=True)
    with pytest.raises(ValueError, match="outside min..max"):
        ParamRange(min=0, max=1, grid=(0.5, 2.0))


def test_space_within_caps_and_point_validation() -> None:
    space = ParamSpace()
    space.check_within_caps(SafetyCaps())
    with pytest.raises(SafetyCapExceeded, match="params.depletion_mw.max=350 exceeds"):
        space.check_within_caps(SafetyCaps(max_depletion_mw=200))
    with pytest.raises(ParameterRejected, match="outside the configured range"):
        space.validate_point(ImagingParams(200.0, 1.0, 1.0))
    grid_space = ParamSpace(depletion_mw=ParamRange(min=0, max=100, grid=(0, 50, 100)))
    grid_space.validate_point(ImagingParams(10.0, 1.0, 50.0))
    with pytest.raises(ParameterRejected, match="not on the configured grid"):
        grid_space.validate_point(ImagingParams(10.0, 1.0, 40.0))
