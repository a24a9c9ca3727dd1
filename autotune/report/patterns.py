"""Patterns of a trace: shape and dtype consistency, time-vs-size trends, ranked candidates.

A candidate is a change that would make traced calls faster, with the cost model's expected
gain (default-config model time over the better config's) and the trace time it would save:

Only problems still served below tier 3 at the end of the trace are candidates.

- tile: the problem is tuned in the cache but its calls ran at tier 1 or 2 (the generic
  kernel's default tiles), so promoting it to tier 3 gains the tuned tiles;
- shape: the problem is not tuned; tuning this exact shape is expected to gain at least what
  the best configuration tuned for another shape of its op and dtype gains on it;
- dtype: as `shape`, where the same shape is tuned in another dtype (whose config is tried).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from autotune.hotspots import Pattern, TraceRecord, patterns
from autotune.report.inputs import TunedEntry
from autotune.report.prediction import ModelOracle, default_config
from autotune.report.tiers import problem_label, successful_calls, times_by_problem_and_tier
from autotune.stats import PowerLawFit, loglog_fit
from tessera_core.types import Problem, TileConfig

MIN_GAIN = 1.01  # a change the model expects to gain less than 1% is not a candidate
LINEAR_SLOPES = (0.8, 1.2)  # log-log slopes read as "time grows linearly with the FLOPs"


@dataclass(frozen=True)
class SizeTrend:
    """Median call time against problem FLOPs for one (op, dtype, tier) across shapes."""

    op: str
    dtype: str
    tier: int
    points: list[tuple[float, float]]  # (flops, median ms) per problem
    fit: PowerLawFit | None  # None with fewer than two distinct sizes

    def verdict(self) -> str:
        if self.fit is None:
            return "one size only: no trend"
        slope = self.fit.slope
        if slope < LINEAR_SLOPES[0]:
            return (
                f"slope {slope:.2f}: sub-linear; fixed costs (launch, dispatch, small grids) weigh"
            )
        if slope <= LINEAR_SLOPES[1]:
            return f"slope {slope:.2f}: time grows about linearly with work (throughput-bound)"
        return f"slope {slope:.2f}: super-linear; larger sizes lose efficiency (memory, spills)"


def size_trends(records: Sequence[TraceRecord]) -> list[SizeTrend]:
    grouped: dict[tuple[str, str, int], list[tuple[float, float]]] = defaultdict(list)
    for problem, tiers in times_by_problem_and_tier(records).items():
        for tier, times in tiers.items():
            grouped[(problem.op, problem.dtype, tier)].append(
                (problem.flops(), statistics.median(times))
            )
    trends = []
    for (op, dtype, tier), points in sorted(grouped.items()):
        points.sort()
        try:
            fit = loglog_fit([f for f, _ in points], [t for _, t in points])
        except ValueError:
            fit = None
        trends.append(SizeTrend(op, dtype, tier, points, fit))
    return trends


@dataclass(frozen=True)
class Candidate:
    kind: str  # "tile" | "shape" | "dtype"
    problem: Problem
    config: TileConfig
    expected_gain: float  # model: default-config time / candidate-config time
    traced_ms: float  # time the trace spent on this problem below tier 3
    detail: str

    @property
    def saved_ms(self) -> float:
        return self.traced_ms * (1.0 - 1.0 / self.expected_gain)


def _best_transfer(
    problem: Problem, configs: Sequence[TileConfig], oracle: ModelOracle, arch: str
) -> tuple[TileConfig, float] | None:
    """The config (of `configs`) the model rates fastest on `problem`, with its time."""
    timed = [(c, oracle.time_ms(problem, c, arch)) for c in dict.fromkeys(configs)]
    scored = [(c, t) for c, t in timed if t is not None]
    return min(scored, key=lambda ct: ct[1]) if scored else None


def candidates(
    records: Sequence[TraceRecord],
    entries: Sequence[TunedEntry],
    oracle: ModelOracle,
    *,
    arch: str,
) -> list[Candidate]:
    """Ranked by the trace time each would save (largest first)."""
    tuned = {(e.kernel_key): e for e in entries}
    last_tier = {
        r.problem(): r.tier for r in sorted(successful_calls(records), key=lambda r: r.time_s)
    }
    found = []
    for problem, tiers in times_by_problem_and_tier(records).items():
        if last_tier.get(problem) == 3:
            continue  # served by the specialized kernel by the end of the trace
        traced_ms = sum(sum(times) for tier, times in tiers.items() if tier < 3)
        base = default_config(problem, arch)
        base_ms = oracle.time_ms(problem, base, arch)
        if base_ms is None:
            continue
        entry = tuned.get(problem.kernel_key(arch))
        if entry is not None:
            kind, configs = "tile", [entry.config]
            detail = f"tuned in the cache ({entry.config}); calls ran at tiers {sorted(tiers)}"
        else:
            other_dtype = [
                e
                for e in entries
                if e.arch == arch and replace(cast(Any, e.problem), dtype=problem.dtype) == problem
            ]
            same_op = [
                e
                for e in entries
                if e.arch == arch
                and e.problem.op == problem.op
                and e.problem.dtype == problem.dtype
            ]
            kind = "dtype" if other_dtype else "shape"
            source = other_dtype or same_op
            configs = [e.config for e in source]
            detail = (
                f"not tuned; {len(source)} tuned config(s) of "
                + (
                    "the same shape in another dtype"
                    if other_dtype
                    else f"{problem.op} {problem.dtype}"
                )
                + " tried on it"
            )
        best = _best_transfer(problem, configs, oracle, arch)
        if best is None or base_ms / best[1] < MIN_GAIN:
            continue
        found.append(Candidate(kind, problem, best[0], base_ms / best[1], traced_ms, detail))
    found.sort(key=lambda c: (-c.saved_ms, problem_label(c.problem)))
    return found


def consistency(records: Sequence[TraceRecord]) -> list[Pattern]:
    """Per op: distinct shapes and dtypes and the dominant ones' shares (autotune.hotspots)."""
    return patterns(records)
