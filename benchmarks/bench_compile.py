"""NVRTC compile time per candidate, cold and from the compile cache, and compile_many's speed-up.

Run: python -m pytest benchmarks/bench_compile.py --benchmark-only  (numbers only, no asserts
on time). Each cold round compiles a fresh source (the rendered kernel plus a unique comment),
so NVRTC does the full work every round while the compile cache never answers.

Groups (pytest-benchmark prints each as one table): `compile-vs-load` puts the cold NVRTC
compile beside the compile-cache hit and bench_runtime's kernel-cache loads (memo and fresh
process) of the same kernel; `compile-throughput` puts compile_many with 1 job beside all cores.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from generator.compile import CompiledKernel, compile_kernel, compile_many
from generator.compile_cache import CompileCache
from generator.render import render
from templates.registry import get_family
from tessera_core.config import default_jobs
from tessera_core.types import AttentionProblem, GemmProblem

ARCH = "sm_90"
ALL_JOBS = default_jobs()  # every core (or TESSERA_JOBS)
BATCH = 2 * max(2, ALL_JOBS)  # candidates per compile_many round: two per core
PROBLEMS = {
    "attention": AttentionProblem(4, 16, 2048, 2048, 64),
    "gemm": GemmProblem(4096, 4096, 4096),
}
_unique = itertools.count()


def _rendered(op: str) -> Any:
    family = get_family(op)
    problem = PROBLEMS[op]
    return render(family, problem, family.default_config(problem, ARCH))


def _fresh(rendered: Any) -> Any:
    """The same kernel with a unique trailing comment: a new cache key, the same NVRTC work."""
    return dataclasses.replace(rendered, source=f"{rendered.source}\n// bench {next(_unique)}\n")


@pytest.mark.benchmark(group="compile-vs-load")
@pytest.mark.parametrize("op", ["attention", "gemm"])
def test_compile_cold(benchmark: Any, op: str, tmp_path: Path) -> None:
    rendered = _rendered(op)
    cache = CompileCache(root=tmp_path)

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        return (_fresh(rendered),), {"arch": ARCH, "cache": cache}

    result = benchmark.pedantic(compile_kernel, setup=setup, rounds=3, iterations=1)
    assert not result.cache_hit  # a check that the benchmark measured NVRTC, not a timing


@pytest.mark.benchmark(group="compile-vs-load")
@pytest.mark.parametrize("op", ["attention", "gemm"])
def test_compile_cache_hit(benchmark: Any, op: str, tmp_path: Path) -> None:
    rendered = _rendered(op)
    cache = CompileCache(root=tmp_path)
    compile_kernel(rendered, arch=ARCH, cache=cache)
    result = benchmark.pedantic(
        compile_kernel, args=(rendered,), kwargs={"arch": ARCH, "cache": cache}, rounds=10
    )
    assert result.cache_hit


@pytest.mark.benchmark(group="compile-throughput")
@pytest.mark.parametrize(
    ("jobs", "executor"),
    [(1, "process"), (ALL_JOBS, "thread"), (ALL_JOBS, "process")],
    ids=lambda v: "all" if v == ALL_JOBS and v != 1 else str(v),
)
def test_compile_many_attention(benchmark: Any, jobs: int, executor: str, tmp_path: Path) -> None:
    """A batch of fresh candidates per round; extra_info has candidates per second."""
    rendered = _rendered("attention")
    cache = CompileCache(root=tmp_path)
    rounds_s: list[float] = []

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        batch = [_fresh(rendered) for _ in range(BATCH)]
        return (batch,), {"arch": ARCH, "jobs": jobs, "cache": cache, "executor": executor}

    def timed(batch: list[Any], **kwargs: Any) -> Any:
        start = time.perf_counter()
        results = compile_many(batch, **kwargs)
        rounds_s.append(time.perf_counter() - start)
        return results

    results = benchmark.pedantic(timed, setup=setup, rounds=2, iterations=1)
    assert all(isinstance(r, CompiledKernel) and not r.cache_hit for r in results)
    benchmark.extra_info["jobs"] = jobs
    benchmark.extra_info["batch"] = BATCH
    benchmark.extra_info["candidates_per_s_best"] = round(BATCH / min(rounds_s), 2)
