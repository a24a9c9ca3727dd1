"""RuntimeConfig: every switch, threshold and resource limit of one Runtime."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Device = Literal["auto", "cuda", "emulator", "cpu"]
DEVICES: tuple[str, ...] = ("auto", "cuda", "emulator", "cpu")


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """How a Runtime chooses tiers, where it traces, and how much it may keep and run in background.

    A signature is promoted to tier 2 once it has been called `tier2_min_calls` times *and*
    spent `tier2_min_time_ms` in total (both must hold; set either to 0 to ignore it), and the
    same for tier 3. Tier 3 needs a specialized kernel in the cache; when there is none, a
    tuning job is queued on a background worker and the signature keeps its tier meanwhile.
    """

    device: Device = "auto"
    arch: str | None = None  # target arch; None: the GPU's, else tessera_core.config ARCH / sm_90

    tier1_fallback: bool = True  # run tier 1 when a compiled tier fails (else re-raise)
    tier2: bool = True  # compile and run the generic kernel of the problem class
    tier3: bool = True  # load (or tune, then load) shape-specialized kernels

    tier2_min_calls: int = 2
    tier2_min_time_ms: float = 0.0
    tier3_min_calls: int = 10
    tier3_min_time_ms: float = 0.0

    hotspot_min_count: int = 2  # criteria `autotune.hotspots.rank` uses on this runtime's trace
    hotspot_min_time_ms: float = 0.0

    max_loaded_kernels: int = 32  # specialized kernels kept loaded (LRU)
    # Signatures whose counters and tier are remembered (LRU): a server fed ever-new shapes
    # keeps bounded state; an evicted signature that returns starts again at tier 1.
    max_signatures: int = 4096
    # Kernel cache layers: the first is written by background tuning, the rest are read-only.
    # None: TESSERA_CACHE_DIR (else the XDG user cache) then TESSERA_CACHE_PATH's layers.
    cache_dirs: tuple[Path, ...] | None = None

    trace_path: Path | None = None  # JSONL file appended to by every call (None: memory only)
    trace_buffer_records: int = 10_000  # in-memory ring buffer behind `history()`
    trace_flush_records: int = 1  # write the JSONL file every this many records

    tuning_workers: int = 1  # background threads running tuning jobs (0: never tune)
    tuning_queue_size: int = 16  # pending jobs beyond this are dropped, retried with backoff
    tuning_trials: int = 16
    tuning_timeout_s: float = 120.0  # wall-clock limit of one tuning job (0: no limit)
    tuning_seed: int = 0

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(
                f"RuntimeConfig.device={self.device!r}: expected one of {', '.join(DEVICES)}"
            )
        for name in ("tier2_min_calls", "tier3_min_calls", "hotspot_min_count"):
            _check_count(name, getattr(self, name), 0)
        for name in ("tier2_min_time_ms", "tier3_min_time_ms", "hotspot_min_time_ms"):
            _check_at_least(name, getattr(self, name), 0.0)
        for name in (
            "max_loaded_kernels",
            "max_signatures",
            "trace_buffer_records",
            "trace_flush_records",
        ):
            _check_count(name, getattr(self, name), 1)
        _check_count("tuning_workers", self.tuning_workers, 0)
        _check_count("tuning_queue_size", self.tuning_queue_size, 1)
        _check_count("tuning_trials", self.tuning_trials, 1)
        _check_at_least("tuning_timeout_s", self.tuning_timeout_s, 0.0)
        if self.cache_dirs is not None:
            dirs: Any = self.cache_dirs  # callers pass lists, strings, PathLikes
            if isinstance(dirs, (str, os.PathLike)):  # one directory, not its characters
                dirs = (dirs,)
            object.__setattr__(self, "cache_dirs", tuple(Path(p) for p in dirs))
        if self.trace_path is not None:
            object.__setattr__(self, "trace_path", Path(self.trace_path))


def _check_count(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"RuntimeConfig.{name}={value!r}: must be an integer >= {low}")


def _check_at_least(name: str, value: object, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        raise ValueError(f"RuntimeConfig.{name}={value!r}: must be a number >= {low}")
