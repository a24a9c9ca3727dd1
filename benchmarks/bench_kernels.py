"""GPU benchmarks of the generated kernels: measured TFLOP/s against the cost model and FA2.

Run on a CUDA machine: `python -m pytest benchmarks/bench_kernels.py --benchmark-only`.
Each case compiles the family's default configuration for the present GPU's arch; each round
checks its output against the float64 reference, then times it with CUDA events (median of
autotune.objective.TIMED_RUNS launches over rotated buffers). `extra_info` carries the measured
median, the cost model's estimate for the same kernel and TFLOP/s, so the model can be
calibrated against the device.
Published anchors (shared/reference/hardware.md, H100 SXM fp16 forward, seq 2k):
FlashAttention-2 d64 non-causal 318 TFLOP/s, causal 262.
"""

from __future__ import annotations

from typing import Any

import pytest

from tessera_core.types import AttentionProblem, GemmProblem, Problem

CASES: list[Problem] = [
    AttentionProblem(8, 16, 2048, 2048, 64),
    AttentionProblem(8, 16, 2048, 2048, 64, causal=True),
    AttentionProblem(4, 16, 2048, 2048, 128),
    AttentionProblem(8, 16, 2048, 2048, 64, dtype="bf16"),
    GemmProblem(4096, 4096, 4096),
]


def _case_id(problem: Problem) -> str:
    mask = "-causal" if getattr(problem, "causal", False) else ""
    return f"{problem.family}-{problem.dtype}-{problem.shape_str()}{mask}"


@pytest.mark.gpu
@pytest.mark.parametrize("problem", CASES, ids=_case_id)
def test_default_config_throughput(benchmark: Any, problem: Problem) -> None:
    from autotune.objective import MeasuredObjective, ModelObjective
    from generator.compile import compile_kernel
    from generator.gpu import probe
    from generator.render import render
    from templates.registry import get_family

    arch = probe().arch
    assert arch is not None
    family = get_family(problem.family)
    config = family.default_config(problem, arch)
    compiled = compile_kernel(render(family, problem, config, arch=arch), arch=arch)
    measured = MeasuredObjective(arch=arch)
    try:
        result = benchmark.pedantic(
            measured.evaluate, args=(problem, config, compiled), rounds=3, iterations=1
        )
    finally:
        measured.close()
    model = ModelObjective(arch=arch).evaluate(problem, config, compiled)
    benchmark.extra_info.update(
        arch=arch,
        config=config.to_dict(),
        measured_ms=result.time_ms,
        measured_tflops=problem.flops() / (result.time_ms * 1e-3) / 1e12,
        model_ms=model.time_ms,
        model_over_measured=model.time_ms / result.time_ms,
        registers=compiled.resources.registers,
    )
