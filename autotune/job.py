"""The tune job: serve a kernel from the cache, or search, compile and store the winner."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cache.entry import KernelPayload
from cache.store import KernelCache
from tessera_core.types import Problem, TileConfig

DEFAULT_TRIALS = 48
LEADERBOARD_SIZE = 5


@dataclass(frozen=True, kw_only=True)
class TuneRequest:
    """Everything one tune job needs; the CLI parses into exactly this."""

    problem: Problem
    arch: str
    trials: int = DEFAULT_TRIALS
    timeout_s: float | None = None
    jobs: int | None = None
    seed: int = 0
    cache_dir: Path | None = None
    retune: bool = False
    progress: bool = True
    storage: str | None = None  # Optuna storage URL shared by every worker of one study
    study_name: str | None = None  # default: the kernel_key
    warm_start: Path | None = None  # records measured elsewhere (autotune.recorded.load_ranking)
    prescreen_top_k: int | None = None  # measure only the cost model's k most promising

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError(f"trials={self.trials}: must be a positive integer")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"timeout_s={self.timeout_s}: must be positive seconds")
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"jobs={self.jobs}: must be a positive integer")
        if self.prescreen_top_k is not None and self.prescreen_top_k < 1:
            raise ValueError(f"prescreen_top_k={self.prescreen_top_k}: must be a positive integer")
        if self.study_name is not None and self.storage is None:
            raise ValueError("study_name needs a storage: pass --storage URL as well")


@dataclass(frozen=True)
class Ranked:
    """One row of the table of best configurations."""

    config: dict[str, int]
    time_ms: float
    tflops: float
    registers: int | None = None
    smem_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class JobResult:
    """What a tune job produced (or found in the cache), in the units it reports."""

    kernel_key: str
    cache_hit: bool
    objective_kind: str  # "measured" | "model"
    config: dict[str, int]
    time_ms: float
    tflops: float
    trials_run: int
    n_valid: int
    n_failed: int
    n_invalid: int
    cache_dir: str
    wall_time_s: float
    leaderboard: list[Ranked] = field(default_factory=list)
    # The search's trial records (autotune.search.TrialRecord) when this job tuned; empty on
    # a cache hit (entries keep a summary, not the trials). Not part of the JSON output.
    records: tuple[Any, ...] = ()

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "kernel_key": self.kernel_key,
            "config": self.config,
            "objective_kind": self.objective_kind,
            "time_ms": self.time_ms,
            "tflops": self.tflops,
            "cache_hit": self.cache_hit,
            "trials_run": self.trials_run,
            "valid": self.n_valid,
            "invalid": self.n_invalid,
            "failed": self.n_failed,
            "cache_dir": self.cache_dir,
            "wall_time_s": self.wall_time_s,
            "top": [row.to_dict() for row in self.leaderboard],
        }


def tflops(problem: Problem, time_ms: float) -> float:
    return problem.flops() / (time_ms * 1e-3) / 1e12


def _from_metadata(
    kernel_key: str,
    metadata: dict[str, Any],
    cache: KernelCache,
    wall_time_s: float,
    *,
    cache_hit: bool,
) -> JobResult:
    """The result a cache entry's metadata describes: a hit's, or the entry just stored."""
    search = metadata.get("search", {})
    objective = metadata["objective"]
    return JobResult(
        kernel_key=kernel_key,
        cache_hit=cache_hit,
        objective_kind=objective["kind"],
        config=metadata["config"],
        time_ms=objective["time_ms"],
        tflops=objective["tflops"],
        trials_run=search.get("trials_run", 0),
        n_valid=search.get("valid", 0),
        n_failed=search.get("failed", 0),
        n_invalid=search.get("invalid", 0),
        cache_dir=str(cache.search_path.writable or ""),
        wall_time_s=wall_time_s,
        leaderboard=[Ranked(**row) for row in metadata.get("leaderboard", [])],
    )


def run(request: TuneRequest) -> JobResult:
    """Serve `request` from the cache unless `retune`; otherwise tune, store and return."""
    from generator.render import template_hash
    from templates.registry import select

    start = time.perf_counter()
    problem, arch = request.problem, request.arch
    selection = select(problem, arch)  # the key names the family: gemm_sm90.… on sm_90a
    family = selection.family
    kernel_key = selection.kernel_key(problem)
    cache = KernelCache(cache_dir=request.cache_dir)
    current_template = template_hash(family)
    if not request.retune:
        entry = cache.get(kernel_key, arch=arch, template_hash=current_template)
        if entry is not None and entry.objective is not None:
            wall_time_s = time.perf_counter() - start
            return _from_metadata(kernel_key, entry.metadata, cache, wall_time_s, cache_hit=True)
    return _tune_and_store(request, family, cache, kernel_key, current_template, start)


def study_records(study: Any) -> tuple[Any, ...]:
    """Every worker's successful evaluations in a shared study, as the search's records."""
    from autotune.search import TrialRecord
    from autotune.strategy import PENALTY_VALUE, spent

    return tuple(
        TrialRecord(
            t.number,
            dict(t.params),
            "ok",
            value_ms=float(t.value),
            kind=None,
            resources=t.user_attrs.get("resources"),
        )
        for t in study.get_trials(deepcopy=False)
        if spent(t) and t.value is not None and t.value < PENALTY_VALUE
    )


def _tune_and_store(
    request: TuneRequest,
    family: Any,
    cache: KernelCache,
    kernel_key: str,
    current_template: str,
    start: float,
) -> JobResult:
    # Optuna, NVRTC and the cost model load only here, so a cache hit stays fast.
    from autotune.search import tune
    from generator.compile import compile_kernel
    from generator.render import render

    problem, arch = request.problem, request.arch
    study = None
    if request.storage is not None:
        from autotune.study import open_study

        study = open_study(request.storage, request.study_name or kernel_key)
    prior: list[dict[str, Any]] = []
    if request.warm_start is not None:
        from autotune.recorded import load_ranking

        prior = load_ranking(request.warm_start)
    result = tune(
        problem,
        arch=arch,
        trials=request.trials,
        timeout_s=request.timeout_s,
        seed=request.seed,
        jobs=request.jobs,
        progress=request.progress,
        study=study,
        prior=prior,
        prescreen_top_k=request.prescreen_top_k,
    )
    if study is not None:
        from autotune.study import DEFAULT_STALE_AFTER_S, wait_until_settled

        # Every worker waits for the study to settle, then all store the same winner through
        # the cache's single-flight build: one builds and stores it, the others load it.
        wait_until_settled(study, stale_after_s=DEFAULT_STALE_AFTER_S)
        result = replace(result, records=study_records(study))
    # Ties (the model often rates configurations alike) go to fewer registers, then less
    # shared memory: the same speed with more headroom for occupancy.
    ok = sorted(
        (r for r in result.records if r.status == "ok" and r.value_ms is not None),
        key=lambda r: (
            r.value_ms or 0.0,
            (r.resources or {}).get("registers", 0),
            family.smem_bytes(problem, TileConfig.from_dict(r.config)),
        ),
    )
    winner = TileConfig.from_dict(ok[0].config)
    winner_ms = float(ok[0].value_ms or 0.0)
    leaderboard = [
        Ranked(
            config=r.config,
            time_ms=float(r.value_ms or 0.0),
            tflops=tflops(problem, float(r.value_ms or 0.0)),
            registers=(r.resources or {}).get("registers"),
            smem_bytes=family.smem_bytes(problem, TileConfig.from_dict(r.config)),
        )
        for r in ok[:LEADERBOARD_SIZE]
    ]
    # The winner was compiled during the search: this is a compile-cache hit.
    compiled = compile_kernel(render(family, problem, winner, arch=arch), arch=arch)
    geometry = family.launch_geometry(problem, winner)
    search = {
        "trials_run": result.trials_run,
        "valid": result.n_valid,
        "failed": result.n_failed,
        "invalid": result.n_invalid,
        "seed": result.seed,
        "stopped_by": result.stopped_by,
        "wall_time_s": result.wall_time_s,
    }
    metadata = {
        "problem": problem.to_dict(),
        "config": winner.to_dict(),
        "objective": {
            "kind": result.objective_kind,
            "time_ms": winner_ms,
            "tflops": tflops(problem, winner_ms),
        },
        "arch": arch,
        "nvrtc_version": compiled.nvrtc_version,
        "template_hash": current_template,
        "kernel_name": compiled.kernel_name,
        "specialized": True,
        "resources": compiled.resources.to_dict(),
        "launch": {
            "grid": list(geometry.grid),
            "block": list(geometry.block),
            "smem_bytes": geometry.smem_bytes,
        },
        "search": search,
        "leaderboard": [row.to_dict() for row in leaderboard],
    }
    if study is None:
        cache.put(kernel_key, cubin=compiled.cubin, ptx=compiled.ptx, metadata=metadata)
    else:
        entry = cache.get_or_build(
            kernel_key,
            lambda: KernelPayload(cubin=compiled.cubin, ptx=compiled.ptx, metadata=metadata),
            arch=arch,
            template_hash=current_template,
        )
        metadata = dict(entry.metadata)
    stored = _from_metadata(
        kernel_key, metadata, cache, time.perf_counter() - start, cache_hit=False
    )
    return replace(stored, records=tuple(result.records))
