"""Host emulator benchmarks: attention 1x2x128x64 with and without its host compile, GEMM, and
the compile time of each g++ -O level.

Run: python -m pytest benchmarks/bench_emulator.py --benchmark-only -p no:cacheprovider
Numbers only, no timed assertions. A cold round compiles a fresh source (the rendered kernel
plus a unique comment), so g++ does the full work while the build cache never answers.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from generator import emulator, host_build, verify
from generator.render import RenderedKernel, render
from templates.registry import get_family
from tessera_core.types import AttentionProblem, GemmProblem, Problem

ARCH = "sm_90"
ATTENTION = AttentionProblem(1, 2, 128, 128, 64)
GEMM = GemmProblem(256, 256, 256)
_fresh = itertools.count()


def _rendered(problem: Problem) -> RenderedKernel:
    family = get_family(problem.family)
    return render(family, problem, family.default_config(problem, ARCH), arch=ARCH)


def _fresh_source(rendered: RenderedKernel) -> str:
    """The kernel's source with a unique trailing comment: a build the cache has never seen."""
    return rendered.source + f"// bench {next(_fresh)}\n"


def _outputs(problem: Problem) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    if isinstance(problem, AttentionProblem):
        b, h, s, d = problem.batch, problem.heads, problem.seq_q, problem.head_dim
        return {"o": ((b, h, s, d), np.dtype(np.float16)), "lse": ((b, h, s), np.dtype("f4"))}
    assert isinstance(problem, GemmProblem)
    return {"c": ((problem.m, problem.n), np.dtype(np.float16))}


def _run(rendered: RenderedKernel, inputs: dict[str, np.ndarray]) -> emulator.EmulatedRun:
    return emulator.run_rendered(rendered, inputs=inputs, outputs=_outputs(rendered.problem))


@pytest.mark.parametrize("problem", [ATTENTION, GEMM], ids=["attention-1x2x128x64", "gemm-256"])
def test_run_with_host_compile(benchmark, problem: Problem) -> None:  # type: ignore[no-untyped-def]
    """Cold: render + g++ + load + both schedules, as the first call of a configuration pays."""
    rendered = _rendered(problem)
    inputs = verify.random_inputs(problem, 0)

    def cold() -> emulator.EmulatedRun:
        return _run(dataclasses.replace(rendered, source=_fresh_source(rendered)), inputs)

    run = benchmark.pedantic(cold, rounds=5, iterations=1)
    benchmark.extra_info.update(compile_s=run.compile_time_s, run_s=run.run_time_s)


@pytest.mark.parametrize("problem", [ATTENTION, GEMM], ids=["attention-1x2x128x64", "gemm-256"])
def test_run_cached_build(benchmark, problem: Problem) -> None:  # type: ignore[no-untyped-def]
    """Warm: the library is loaded; both schedules run."""
    rendered = _rendered(problem)
    inputs = verify.random_inputs(problem, 0)
    _run(rendered, inputs)
    benchmark(_run, rendered, inputs)


@pytest.mark.parametrize("opt_level", [0, 1, 2])
def test_host_compile_by_opt_level(benchmark, opt_level: int, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """g++ time for the attention kernel at each -O level (the run-time side is in extra_info)."""
    rendered = _rendered(ATTENTION)
    inputs = verify.random_inputs(ATTENTION, 0)

    def build() -> host_build.HostLibrary:
        return host_build.build_host_library(
            _fresh_source(rendered), opt_level=opt_level, cache_dir=tmp_path
        )

    library = benchmark.pedantic(build, rounds=3, iterations=1)
    kernel = library.kernel(rendered.kernel_name)
    family = get_family(ATTENTION.family)
    buffers = {n: np.ascontiguousarray(a) for n, a in inputs.items()}
    outs = {n: np.full(shape, np.nan, dtype) for n, (shape, dtype) in _outputs(ATTENTION).items()}
    pointers = {n: int(a.ctypes.data) for n, a in {**buffers, **outs}.items()}
    geometry = family.launch_geometry(ATTENTION, rendered.config)
    start = time.perf_counter()
    kernel.launch(
        family.make_params(ATTENTION, pointers=pointers),
        grid=geometry.grid,
        block=geometry.block,
        smem_bytes=geometry.smem_bytes,
    )
    benchmark.extra_info["one_schedule_run_s"] = time.perf_counter() - start
