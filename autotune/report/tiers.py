"""What a runtime trace says about the tiers: mix, time distributions, significant speedups."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from autotune.hotspots import TraceRecord
from autotune.stats import (
    Distribution,
    MannWhitney,
    RatioInterval,
    bootstrap_median_ratio,
    describe,
    mann_whitney_u,
)
from tessera_core.types import Problem

SIGNIFICANCE = 0.05  # two-sided level at which a speedup is called significant
# (baseline, tier): tiers 2 and 3 over tier 1, and what specialization adds (3 over 2).
COMPARED_TIERS = ((1, 2), (1, 3), (2, 3))


def problem_label(problem: Problem) -> str:
    mask = " causal" if getattr(problem, "causal", False) else ""
    return f"{problem.op} {problem.dtype} {problem.shape_str()}{mask}"


def problem_order(problem: Problem) -> tuple[str, str, bool, float, str]:
    """Tables list problems by op, dtype and mask, then by size (FLOPs)."""
    causal = bool(getattr(problem, "causal", False))
    return (problem.op, problem.dtype, causal, problem.flops(), problem.shape_str())


@dataclass(frozen=True)
class TierShare:
    tier: int
    calls: int
    call_share: float
    total_ms: float
    time_share: float


@dataclass(frozen=True)
class TierDistribution:
    problem: Problem
    tier: int
    stats: Distribution


@dataclass(frozen=True)
class Speedup:
    """Tier `tier` against a lower tier `baseline` on one problem: ratio of medians, rank test."""

    problem: Problem
    tier: int
    baseline: int
    ratio: RatioInterval  # median(baseline) / median(tier): > 1 means `tier` is faster
    test: MannWhitney  # baseline samples vs tier samples

    @property
    def significant(self) -> bool:
        return self.test.p_value < SIGNIFICANCE


@dataclass(frozen=True)
class TierAnalysis:
    calls: int
    failed_calls: int
    mix: list[TierShare]
    distributions: list[TierDistribution]
    speedups: list[Speedup]
    events: dict[str, int]  # promote / demote / tune counts


def successful_calls(records: Sequence[TraceRecord]) -> list[TraceRecord]:
    return [r for r in records if r.event == "call" and r.ok]


def times_by_problem_and_tier(
    records: Sequence[TraceRecord],
) -> dict[Problem, dict[int, list[float]]]:
    """problem -> tier -> wall times (ms) of its successful calls, in trace order."""
    grouped: dict[Problem, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in successful_calls(records):
        grouped[record.problem()][record.tier].append(record.wall_ms)
    return {p: dict(sorted(t.items())) for p, t in grouped.items()}


def analyse_tiers(records: Sequence[TraceRecord], *, seed: int = 0) -> TierAnalysis:
    """Tier mix, per-(problem, tier) distributions, speedups of tiers 2 and 3 over tier 1 and
    of tier 3 over tier 2."""
    calls = successful_calls(records)
    total_ms = sum(r.wall_ms for r in calls) or 1.0
    counts: dict[int, list[float]] = defaultdict(list)
    for record in calls:
        counts[record.tier].append(record.wall_ms)
    mix = [
        TierShare(tier, len(times), len(times) / len(calls), sum(times), sum(times) / total_ms)
        for tier, times in sorted(counts.items())
    ]
    distributions, speedups = [], []
    grouped = times_by_problem_and_tier(records)
    for problem in sorted(grouped, key=problem_order):
        tiers = grouped[problem]
        for tier, times in tiers.items():
            distributions.append(TierDistribution(problem, tier, describe(times)))
        for baseline, tier in COMPARED_TIERS:
            if tiers.get(baseline) and tiers.get(tier):
                speedups.append(
                    Speedup(
                        problem,
                        tier,
                        baseline,
                        bootstrap_median_ratio(tiers[baseline], tiers[tier], seed=seed),
                        mann_whitney_u(tiers[baseline], tiers[tier]),
                    )
                )
    events: dict[str, int] = defaultdict(int)
    for record in records:
        if record.event != "call":
            events[record.event] += 1
    return TierAnalysis(
        calls=len(calls),
        failed_calls=sum(1 for r in records if r.event == "call" and not r.ok),
        mix=mix,
        distributions=distributions,
        speedups=speedups,
        events=dict(sorted(events.items())),
    )
