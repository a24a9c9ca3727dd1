"""Published forward-attention throughput and the cost model's predictions for the same shapes.

Published figures restate shared/reference/hardware.md (H100 SXM, fp16, FlashAttention-2,
cuDNN and FlashAttention-3 benchmarks; batch x seq = 16k tokens, 2048 hidden) and the issue's
A100 range for FlashAttention-2 (~190-230 TFLOP/s forward at d64/d128, up to 73% of peak).
Where only a range over sequence lengths is published (d128 on H100), the range is given.
Shared by benchmarks/bench_model.py and scripts/device_check.py; no GPU needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tessera_core.types import AttentionProblem, TileConfig

# (arch, head_dim, causal, seq) -> {"fa2": (low, high), "cudnn": ..., "fa3": ...} TFLOP/s.
Range = tuple[float, float]
PUBLISHED: dict[tuple[str, int, bool, int], dict[str, Range]] = {
    ("sm_90", 64, False, 2048): {"fa2": (318, 318), "cudnn": (395, 395), "fa3": (460, 460)},
    ("sm_90", 64, False, 8192): {"fa2": (322, 322), "cudnn": (412, 412), "fa3": (496, 496)},
    ("sm_90", 64, True, 2048): {"fa2": (262, 262), "cudnn": (334, 334), "fa3": (371, 371)},
    ("sm_90", 64, True, 8192): {"fa2": (295, 295), "cudnn": (379, 379), "fa3": (460, 460)},
    ("sm_90", 128, False, 2048): {"fa2": (309, 370), "cudnn": (497, 617), "fa3": (467, 648)},
    ("sm_90", 128, False, 8192): {"fa2": (309, 370), "cudnn": (497, 617), "fa3": (467, 648)},
    ("sm_90", 128, True, 2048): {"fa2": (191, 335), "cudnn": (315, 539), "fa3": (292, 616)},
    ("sm_90", 128, True, 8192): {"fa2": (191, 335), "cudnn": (315, 539), "fa3": (292, 616)},
    ("sm_80", 64, False, 2048): {"fa2": (190, 230)},
    ("sm_80", 64, False, 8192): {"fa2": (190, 230)},
    ("sm_80", 128, False, 2048): {"fa2": (190, 230)},
    ("sm_80", 128, False, 8192): {"fa2": (190, 230)},
}
SEQS = (2048, 8192)
HEAD_DIMS = (64, 128)
TARGET = (0.9, 1.1)  # the band for model / FlashAttention-2 (reported, not asserted)
# FlashAttention-2's own forward tiles (hardware.md): 4 warps, Q read from shared memory.
FA2_TILES = {64: (128, 128), 128: (128, 64)}
FA2_REGISTERS = 255  # FlashAttention-2's forward kernels run at the register limit


def shapes() -> list[AttentionProblem]:
    """The side-by-side shapes: 8x16x{2048,8192}x{64,128} fp16, causal and not."""
    return [
        AttentionProblem(8, 16, seq, seq, d, causal=causal)
        for d in HEAD_DIMS
        for seq in SEQS
        for causal in (False, True)
    ]


def fa2_tile_config(head_dim: int) -> TileConfig:
    bm, bn = FA2_TILES[head_dim]
    return TileConfig(bm, bn, 16, 4, 2, options=(("q_in_regs", 0),))


@dataclass(frozen=True)
class _Resources:
    registers: int
    static_smem_bytes: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0


def model_tflops(
    problem: AttentionProblem,
    config: TileConfig,
    arch: str,
    *,
    resources: Any = None,
    loop_counts: Any = None,
) -> float:
    """The cost model's TFLOP/s for `config` (resources default: FlashAttention-2's 255 regs)."""
    from autotune.cost_model import estimate
    from templates.attention.space import smem_bytes

    cost = estimate(
        problem,
        config,
        resources or _Resources(FA2_REGISTERS),
        dynamic_smem_bytes=smem_bytes(problem, config),
        arch=arch,
        loop_counts=loop_counts,
    )
    return problem.flops() / (cost.time_ms * 1e-3) / 1e12


def compiled_model_tflops(problem: AttentionProblem, config: TileConfig, arch: str) -> float:
    """The model's TFLOP/s for `config` compiled for `arch` (real ptxas resources and SASS)."""
    from autotune.objective import main_loop_counts
    from generator.compile import compile_kernel
    from generator.render import render
    from templates.registry import get_family

    family = get_family(problem.family)
    compiled = compile_kernel(render(family, problem, config, arch=arch), arch=arch)
    return model_tflops(
        problem,
        config,
        arch,
        resources=compiled.resources,
        loop_counts=main_loop_counts(compiled),
    )


def band(predicted: float, published: Range) -> str:
    """How `predicted` compares with a published range: 'x0.95' or 'x0.90-1.05'."""
    low, high = published
    if low == high:
        return f"x{predicted / low:.2f}"
    return f"x{predicted / high:.2f}-{predicted / low:.2f}"


def within_target(predicted: float, published: Range) -> bool:
    return TARGET[0] * published[0] <= predicted <= TARGET[1] * published[1]


def table_rows(predictions: dict[tuple[str, AttentionProblem], dict[str, float]]) -> list[str]:
    """Markdown rows: arch, shape, each prediction, published FA2 / cuDNN / FA3, ratio to FA2."""
    lines = [
        "| arch | shape | causal | model: tuned | model: FA2 tiles | FA2 published | "
        "cuDNN | FA3 | tuned / FA2 | in 0.9-1.1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(r: Range | None) -> str:
        if r is None:
            return "-"
        return f"{r[0]:.0f}" if r[0] == r[1] else f"{r[0]:.0f}-{r[1]:.0f}"

    for (arch, problem), values in predictions.items():
        key = (arch, problem.head_dim, problem.causal, problem.seq_q)
        published = PUBLISHED.get(key, {})
        fa2 = published.get("fa2")
        tuned = values.get("tuned")
        ratio = band(tuned, fa2) if fa2 and tuned else "-"
        ok = ("yes" if within_target(tuned, fa2) else "no") if fa2 and tuned else "-"
        lines.append(
            f"| {arch} | {problem.shape_str()} | {problem.causal} | "
            f"{tuned:.0f} | {values.get('fa2_tiles', 0.0):.0f} | {fmt(fa2)} | "
            f"{fmt(published.get('cudnn'))} | {fmt(published.get('fa3'))} | {ratio} | {ok} |"
            if tuned is not None
            else f"| {arch} | {problem.shape_str()} | {problem.causal} | - | "
            f"{values.get('fa2_tiles', 0.0):.0f} | {fmt(fa2)} | {fmt(published.get('cudnn'))} | "
            f"{fmt(published.get('fa3'))} | - | - |"
        )
    return lines


def model_tuned(
    problem: AttentionProblem, arch: str, *, trials: int, seed: int = 0
) -> tuple[TileConfig, float]:
    """(the configuration the model-objective tuner picks, its predicted TFLOP/s)."""
    from autotune.objective import ModelObjective
    from autotune.search import tune

    result = tune(
        problem,
        arch=arch,
        trials=trials,
        seed=seed,
        objective=ModelObjective(arch=arch),
        progress=False,
    )
    return result.best_config, problem.flops() / (result.best_time_ms * 1e-3) / 1e12
