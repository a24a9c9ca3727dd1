"""NVRTC compile time per candidate, cold and from the compile cache, and compile_many's speed-up.

Run: python -m pytest benchmarks/bench_compile.py --benchmark-only  (numbers only, no asserts
on time). Each cold round compiles a fresh source (the rendered kernel plus a unique comment),
so NVRTC does the full work every round while the compile cache never answers.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import pytest

from generator.compile import CompiledKernel, compile_kernel, compile_many
from generator.compile_cache import CompileCache
from generator.render import render
from templates.registry import get_family
from tessera_core.types import AttentionProblem, GemmProblem

ARCH = "sm_90"
BATCH = 4  # candidates per compile_many round: two per core on the 2-core reference machine
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


@pytest.mark.parametrize("op", ["attention", "gemm"])
def test_compile_cold(benchmark: Any, op: str, tmp_path: Path) -> None:
    rendered = _rendered(op)
    cache = CompileCache(root=tmp_path)

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        return (_fresh(rendered),), {"arch": ARCH, "cache": cache}

    result = benchmark.pedantic(compile_kernel, setup=setup, rounds=3, iterations=1)
    assert not result.cache_hit  # a check that the benchmark measured NVRTC, not a timing


@pytest.mark.parametrize("op", ["attention", "gemm"])
def test_compile_cache_hit(benchmark: Any, op: str, tmp_path: Path) -> None:
    rendered = _rendered(op)
    cache = CompileCache(root=tmp_path)
    compile_kernel(rendered, arch=ARCH, cache=cache)
    result = benchmark.pedantic(
        compile_kernel, args=(rendered,), kwargs={"arch": ARCH, "cache": cache}, rounds=10
    )
    assert result.cache_hit


@pytest.mark.parametrize(
    ("jobs", "executor"), [(1, "process"), (2, "thread"), (2, "process")], ids=str
)
def test_compile_many_attention(benchmark: Any, jobs: int, executor: str, tmp_path: Path) -> None:
    rendered = _rendered("attention")
    cache = CompileCache(root=tmp_path)

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        batch = [_fresh(rendered) for _ in range(BATCH)]
        return (batch,), {"arch": ARCH, "jobs": jobs, "cache": cache, "executor": executor}

    results = benchmark.pedantic(compile_many, setup=setup, rounds=2, iterations=1)
    assert all(isinstance(r, CompiledKernel) and not r.cache_hit for r in results)
