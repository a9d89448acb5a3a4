"""The study metrics on cases computed by hand (paper eq. 1–5)."""

from __future__ import annotations

import pytest

from stedloop.errors import DataError
from stedloop.metrics import (
    BIN_EDGES,
    BinCounts,
    bin_label,
    bin_of,
    confusion,
    domination,
    mean_std,
    tally,
)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0.0, 0),
        (0.19999, 0),
        (0.2, 1),
        (0.4, 2),
        (0.6, 3),  # 0.6 / 0.2 = 2.9999… in floating point: must still be bin 3
        (0.8, 4),
        (0.99, 4),
        (1.0, 4),
    ],
)
def test_bin_of_edges(score: float, expected: int) -> None:
    assert bin_of(score) == expected


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), float("inf")])
def test_bin_of_rejects_scores_outside_unit_interval(bad: float) -> None:
    with pytest.raises(DataError, match="outside"):
        bin_of(bad)


def test_bin_labels() -> None:
    assert len(BIN_EDGES) == 6
    assert bin_label(0) == "0.0–0.2"
    assert bin_label(4) == "0.8–1.0"


def test_confusion_and_domination_by_hand() -> None:
    # 10 shown, 2 discarded -> Ñ = 8; T = 3, P = 4, E = 1.
    # C = 1 − |(2·4 + 1) − 8| / 8 = 1 − 1/8 = 0.875 ; D = 4 / 7.
    c = BinCounts(shown=10, kept=8, target=3, prediction=4, equivalent=1)
    assert confusion(c) == pytest.approx(0.875)
    assert domination(c) == pytest.approx(4 / 7)


def test_confusion_extremes() -> None:
    # Always the expert's score: 2P + E = 0, C = 1 − Ñ/Ñ = 0; D = 0.
    always_target = BinCounts(shown=5, kept=5, target=5)
    assert confusion(always_target) == 0.0
    assert domination(always_target) == 0.0
    # Always the network's: 2P + E = 2Ñ, C = 1 − Ñ/Ñ = 0; D = 1.
    always_net = BinCounts(shown=4, kept=4, prediction=4)
    assert confusion(always_net) == 0.0
    assert domination(always_net) == 1.0
    # All equivalent: 2P + E = Ñ, C = 1; D undefined (T + P = 0).
    all_equal = BinCounts(shown=3, kept=3, equivalent=3)
    assert confusion(all_equal) == 1.0
    assert domination(all_equal) is None
    # Half and half: T = P = 2 -> 2P + E = 4 = Ñ, C = 1, D = 0.5.
    half = BinCounts(shown=4, kept=4, target=2, prediction=2)
    assert confusion(half) == 1.0
    assert domination(half) == 0.5


def test_undefined_cells_are_none() -> None:
    empty = BinCounts()
    assert confusion(empty) is None
    assert domination(empty) is None
    all_discarded = BinCounts(shown=3, kept=0)
    assert confusion(all_discarded) is None
    assert domination(all_discarded) is None


def test_tally_by_hand() -> None:
    trials = [
        (0.05, "target"),
        (0.10, "discard"),
        (0.25, "prediction"),
        (0.30, "equivalent"),
        (0.35, "prediction"),
        (0.60, "target"),
        (1.00, "equivalent"),
    ]
    bins = tally(trials)
    assert len(bins) == 5
    assert bins[0] == BinCounts(shown=2, kept=1, target=1, prediction=0, equivalent=0)
    assert bins[1] == BinCounts(shown=3, kept=3, target=0, prediction=2, equivalent=1)
    assert bins[2] == BinCounts()
    assert bins[3] == BinCounts(shown=1, kept=1, target=1)
    assert bins[4] == BinCounts(shown=1, kept=1, equivalent=1)
    # bin 1: C = 1 − |(4 + 1) − 3| / 3 = 1/3 ; D = 2 / 2 = 1
    assert confusion(bins[1]) == pytest.approx(1 / 3)
    assert domination(bins[1]) == 1.0
    assert bins[0].discarded == 1


def test_tally_rejects_unknown_choice() -> None:
    with pytest.raises(DataError, match="unknown choice"):
        tally([(0.5, "network")])  # type: ignore[list-item]


def test_mean_std_ignores_undefined() -> None:
    # mean of 0.5 and 1.0 = 0.75; population std = 0.25
    mean, std, n = mean_std([0.5, None, 1.0])
    assert (mean, std, n) == (pytest.approx(0.75), pytest.approx(0.25), 2)
    assert mean_std([None, None]) == (None, None, 0)
    assert mean_std([]) == (None, None, 0)
    assert mean_std([0.3]) == (pytest.approx(0.3), 0.0, 1)
