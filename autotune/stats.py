"""Statistics for timing samples: summaries, Mann-Whitney U, bootstrap ratio CIs, log-log fits.

Timings are skewed and heavy-tailed (a preempted call is ten times slower, never ten times
faster), so comparisons are rank-based (Mann-Whitney U) or on medians (bootstrap), never a
t-test on means. NumPy only: scipy is not a dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Distribution:
    """Summary of one group of timing samples (milliseconds)."""

    n: int
    mean_ms: float
    std_ms: float  # sample standard deviation (ddof=1); 0 for a single sample
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float


def describe(times_ms: Sequence[float]) -> Distribution:
    """Mean, std, median and spread of `times_ms` (at least one sample)."""
    values = np.asarray(times_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("times_ms is empty: expected at least one timing sample")
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return Distribution(
        n=int(values.size),
        mean_ms=float(values.mean()),
        std_ms=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        median_ms=float(median),
        p10_ms=float(p10),
        p90_ms=float(p90),
        min_ms=float(values.min()),
        max_ms=float(values.max()),
    )


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, ties sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < values.size:
        stop = start + 1
        while stop < values.size and sorted_values[stop] == sorted_values[start]:
            stop += 1
        ranks[order[start:stop]] = (start + 1 + stop) / 2.0  # mean of ranks start+1 .. stop
        start = stop
    return ranks


@dataclass(frozen=True)
class MannWhitney:
    """Two-sided Mann-Whitney U test of x against y (normal approximation, tie-corrected).

    `u` counts the pairs (xi, yj) with xi > yj, ties counting one half; `effect` is u / (n_x
    n_y), the probability that a random x exceeds a random y (0.5: no difference).
    """

    u: float
    z: float
    p_value: float
    n_x: int
    n_y: int

    @property
    def effect(self) -> float:
        return self.u / (self.n_x * self.n_y)


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> MannWhitney:
    """Mann-Whitney U of `x` vs `y` with the tie-corrected normal approximation.

    The variance is n_x n_y / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1))) over tie groups of
    size t, with a continuity correction of 1/2; the p-value is two-sided. The approximation
    is what one reports beside a handful of samples too, but it is only accurate from about
    8 samples a side: the report prints the sample counts next to every p-value.

    Raises:
        ValueError: either side is empty.
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.size == 0 or ys.size == 0:
        raise ValueError(f"mann_whitney_u needs samples on both sides; got {xs.size} and {ys.size}")
    n_x, n_y = xs.size, ys.size
    n = n_x + n_y
    ranks = average_ranks(np.concatenate([xs, ys]))
    u = float(ranks[:n_x].sum() - n_x * (n_x + 1) / 2.0)
    mean_u = n_x * n_y / 2.0
    _, tie_sizes = np.unique(np.concatenate([xs, ys]), return_counts=True)
    tie_term = float(((tie_sizes**3) - tie_sizes).sum())
    variance = n_x * n_y / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0.0:  # every value equal: no evidence either way
        return MannWhitney(u=u, z=0.0, p_value=1.0, n_x=n_x, n_y=n_y)
    delta = u - mean_u
    z = math.copysign(max(abs(delta) - 0.5, 0.0), delta) / math.sqrt(variance)
    p_value = min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))
    return MannWhitney(u=u, z=z, p_value=p_value, n_x=n_x, n_y=n_y)


@dataclass(frozen=True)
class RatioInterval:
    """median(numerator) / median(denominator) with a percentile bootstrap interval."""

    ratio: float
    low: float
    high: float
    confidence: float
    resamples: int


def bootstrap_median_ratio(
    numerator: Sequence[float],
    denominator: Sequence[float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> RatioInterval:
    """The ratio of medians and its percentile bootstrap interval (each side resampled apart).

    A speedup of tier 3 over tier 1 is `bootstrap_median_ratio(tier1_ms, tier3_ms)`. Seeded:
    the same samples give the same interval.
    """
    num, den = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    if num.size == 0 or den.size == 0:
        raise ValueError(
            f"bootstrap_median_ratio needs samples on both sides; got {num.size} and {den.size}"
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence}: expected a fraction in (0, 1)")
    if resamples < 1:
        raise ValueError(f"resamples={resamples}: expected a positive integer")
    rng = np.random.default_rng(seed)
    num_medians = np.median(rng.choice(num, size=(resamples, num.size)), axis=1)
    den_medians = np.median(rng.choice(den, size=(resamples, den.size)), axis=1)
    ratios = num_medians / np.maximum(den_medians, 1e-300)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(ratios, [tail, 100.0 - tail])
    ratio = float(np.median(num) / max(float(np.median(den)), 1e-300))
    return RatioInterval(ratio, float(low), float(high), confidence, resamples)


@dataclass(frozen=True)
class PowerLawFit:
    """time = exp(intercept) * size^slope, fitted by least squares on logs."""

    slope: float
    intercept: float
    r_squared: float
    n: int


def loglog_fit(sizes: Sequence[float], times: Sequence[float]) -> PowerLawFit:
    """Least-squares line through (log size, log time); needs two distinct positive sizes."""
    xs, ys = np.asarray(sizes, np.float64), np.asarray(times, np.float64)
    if xs.size != ys.size:
        raise ValueError(f"sizes and times differ in length: {xs.size} vs {ys.size}")
    if xs.size < 2 or np.any(xs <= 0) or np.any(ys <= 0) or np.unique(xs).size < 2:
        raise ValueError("loglog_fit needs at least two distinct positive sizes and positive times")
    log_x, log_y = np.log(xs), np.log(ys)
    slope, intercept = np.polyfit(log_x, log_y, 1)
    residual = log_y - (slope * log_x + intercept)
    total = float(((log_y - log_y.mean()) ** 2).sum())
    r_squared = 1.0 - float((residual**2).sum()) / total if total > 0 else 1.0
    return PowerLawFit(float(slope), float(intercept), r_squared, int(xs.size))
