"""Timing statistics against values computed independently: pair counts, tie groups, medians."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from autotune.stats import (
    average_ranks,
    bootstrap_median_ratio,
    describe,
    loglog_fit,
    mann_whitney_u,
)


def _u_by_pairs(x: list[float], y: list[float]) -> float:
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)


def _p_by_hand(x: list[float], y: list[float]) -> float:
    """Two-sided p: tie-corrected variance from the tie groups, continuity correction 1/2."""
    n_x, n_y = len(x), len(y)
    n = n_x + n_y
    ties = sum(t**3 - t for t in Counter(x + y).values())
    sigma = math.sqrt(n_x * n_y / 12 * ((n + 1) - ties / (n * (n - 1))))
    z = (abs(_u_by_pairs(x, y) - n_x * n_y / 2) - 0.5) / sigma
    return math.erfc(z / math.sqrt(2))


def test_average_ranks_share_the_mean_of_tied_positions() -> None:
    ranks = average_ranks(np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0]))
    # sorted: 1 1 2 3 4 5 5 6 9 -> the 1s share ranks 1,2; the 5s share 6,7
    assert ranks.tolist() == [4.0, 1.5, 5.0, 1.5, 6.5, 9.0, 3.0, 8.0, 6.5]


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([3.0, 1.0, 4.0, 1.0, 5.0], [2.0, 7.0, 1.0, 8.0]),  # ties across the samples
        ([10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        ([0.5, 0.5, 0.7, 0.9], [0.5, 0.6, 0.6, 0.9, 1.1]),
    ],
)
def test_mann_whitney_matches_pair_counting_and_the_hand_formula(
    x: list[float], y: list[float]
) -> None:
    result = mann_whitney_u(x, y)
    assert result.u == _u_by_pairs(x, y)
    assert result.n_x == len(x) and result.n_y == len(y)
    assert result.p_value == pytest.approx(_p_by_hand(x, y), rel=1e-12)
    mirrored = mann_whitney_u(y, x)
    assert mirrored.u == len(x) * len(y) - result.u
    assert mirrored.p_value == pytest.approx(result.p_value, rel=1e-12)


def test_mann_whitney_separated_samples_are_significant() -> None:
    # 8 vs 6 with no overlap: U = 48 of 48, z = (24 - 0.5) / sqrt(8*6*15/12) = 3.033
    result = mann_whitney_u(list(range(10, 18)), list(range(6)))
    assert result.u == 48 and result.effect == 1.0
    assert result.z == pytest.approx(23.5 / math.sqrt(60.0))
    assert result.p_value == pytest.approx(math.erfc(23.5 / math.sqrt(60.0) / math.sqrt(2)))
    assert result.p_value < 0.01


def test_mann_whitney_identical_values_give_no_evidence() -> None:
    result = mann_whitney_u([2.0, 2.0, 2.0], [2.0, 2.0])
    assert (result.u, result.z, result.p_value) == (3.0, 0.0, 1.0)


def test_mann_whitney_rejects_an_empty_side() -> None:
    with pytest.raises(ValueError, match="samples on both sides; got 0 and 2"):
        mann_whitney_u([], [1.0, 2.0])


def test_bootstrap_ratio_is_the_ratio_of_medians_with_a_seeded_interval() -> None:
    rng = np.random.default_rng(7)
    slow = list(10.0 + rng.exponential(1.0, 30))
    fast = list(2.0 + rng.exponential(0.2, 30))
    result = bootstrap_median_ratio(slow, fast, resamples=500, seed=3)
    assert result.ratio == pytest.approx(float(np.median(slow) / np.median(fast)))
    assert result.low <= result.ratio <= result.high
    assert result.low > 1.0  # clearly faster: the interval excludes "no speedup"
    again = bootstrap_median_ratio(slow, fast, resamples=500, seed=3)
    assert (again.low, again.high) == (result.low, result.high)


def test_bootstrap_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"confidence=1\.5"):
        bootstrap_median_ratio([1.0], [1.0], confidence=1.5)
    with pytest.raises(ValueError, match="resamples=0"):
        bootstrap_median_ratio([1.0], [1.0], resamples=0)


def test_loglog_fit_recovers_a_power_law() -> None:
    sizes = [1e6, 1e7, 1e8, 1e9]
    fit = loglog_fit(sizes, [3.0 * s**0.8 for s in sizes])
    assert fit.slope == pytest.approx(0.8)
    assert math.exp(fit.intercept) == pytest.approx(3.0)
    assert fit.r_squared == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two distinct positive sizes"):
        loglog_fit([5.0, 5.0], [1.0, 2.0])


def test_describe_summarises_samples() -> None:
    stats = describe([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (stats.n, stats.median_ms, stats.min_ms, stats.max_ms) == (5, 3.0, 1.0, 100.0)
    assert stats.mean_ms == pytest.approx(22.0)
    assert stats.std_ms == pytest.approx(float(np.std([1, 2, 3, 4, 100], ddof=1)))
    with pytest.raises(ValueError, match="times_ms is empty"):
        describe([])
