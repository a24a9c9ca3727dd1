"""Runtime statistics: per-tier call counts and times, loaded kernels, tuning jobs, tier changes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class TierTimes:
    """Running count / total / min / max of one tier's wall times (mutable, caller thread only)."""

    __slots__ = ("count", "max_ms", "min_ms", "total_ms")

    def __init__(self) -> None:
        self.count = 0
        self.total_ms = 0.0
        self.min_ms = math.inf
        self.max_ms = 0.0

    def add(self, wall_ms: float) -> None:
        self.count += 1
        self.total_ms += wall_ms
        if wall_ms < self.min_ms:
            self.min_ms = wall_ms
        if wall_ms > self.max_ms:
            self.max_ms = wall_ms

    def snapshot(self) -> TierStats:
        if not self.count:
            return TierStats(0, 0.0, 0.0, 0.0)
        return TierStats(self.count, self.total_ms / self.count, self.min_ms, self.max_ms)


@dataclass(frozen=True)
class TierStats:
    count: int
    mean_ms: float
    min_ms: float
    max_ms: float


@dataclass(frozen=True)
class TuningStats:
    queued: int
    running: int
    finished: int
    failed: int
    dropped: int  # refused because the queue was full (retried later), or cancelled by close()


@dataclass(frozen=True)
class RuntimeStats:
    """A snapshot of `Runtime.stats()`."""

    device: str
    arch: str
    total_calls: int  # successful executions
    failed_calls: int
    tiers: dict[int, TierStats]
    signatures: int
    signatures_by_tier: dict[int, int]
    loaded_kernels: list[str]  # specialized kernels held, least recently used first
    tuning: TuningStats
    promotions: int
    demotions: int
    extra: dict[str, object] = field(default_factory=dict)

    def summary(self) -> str:
        """A few human-readable lines, as the basic-usage example prints them."""
        lines = [
            f"{self.total_calls} call(s) on {self.device} ({self.arch}), "
            f"{self.failed_calls} failed, {self.signatures} signature(s), "
            f"{self.promotions} promotion(s), {self.demotions} demotion(s)"
        ]
        for tier in (1, 2, 3):
            s = self.tiers[tier]
            if s.count:
                lines.append(
                    f"  tier {tier}: {s.count:5d} calls  mean {s.mean_ms:9.3f} ms  "
                    f"min {s.min_ms:9.3f} ms  max {s.max_ms:9.3f} ms"
                )
            else:
                lines.append(f"  tier {tier}:     0 calls")
        t = self.tuning
        lines.append(
            f"  tuning: {t.queued} queued, {t.running} running, {t.finished} finished, "
            f"{t.failed} failed, {t.dropped} dropped; "
            f"{len(self.loaded_kernels)} specialized kernel(s) loaded"
        )
        return "\n".join(lines)
