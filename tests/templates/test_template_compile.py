"""Both templates compile with NVRTC for sm_80 and sm_90: default tiles spill nothing and their
SASS uses tensor cores (HMMA), ldmatrix (LDSM) and cp.async (LDGSTS)."""

from __future__ import annotations

import pytest

from generator.compile import compile_kernel
from generator.render import render
from generator.sass import instruction_counts
from templates.registry import get_family
from tessera_core.types import AttentionProblem, GemmProblem, Problem, TileConfig

ARCHS = ("sm_80", "sm_90")
DEFAULT_PROBLEMS: list[Problem] = [
    AttentionProblem(2, 4, 1000, 1000, 64, dtype="fp16", causal=True),
    AttentionProblem(2, 4, 1000, 1000, 128, dtype="bf16", causal=False),
    # The largest head dim, and every LLM variant at once (GQA, window, softcap, ALiBi, bshd).
    AttentionProblem(2, 4, 1000, 1000, 256, dtype="bf16", causal=True),
    AttentionProblem(
        2,
        8,
        1000,
        1000,
        128,
        heads_kv=2,
        window_left=256,
        softcap=30.0,
        alibi="batch_heads",
        layout="bshd",
        causal=True,
    ),
    GemmProblem(1000, 1000, 1000, dtype="fp16"),
]
# A small sample of each space beyond the defaults: both dtypes, 1-4 stages, generic and
# specialized sizes, each family's extreme tiles.
Q_REGS = (("q_in_regs", 1),)
Q_SMEM = (("q_in_regs", 0),)
SAMPLE: list[tuple[Problem, TileConfig, bool]] = [
    (AttentionProblem(1, 2, 77, 130, 64, causal=True), TileConfig(32, 32, 16, 2, 1, Q_REGS), True),
    (AttentionProblem(1, 2, 77, 130, 128, "bf16"), TileConfig(64, 128, 16, 4, 1, Q_SMEM), False),
    (
        AttentionProblem(1, 2, 500, 500, 64, "bf16", True),
        TileConfig(128, 128, 16, 8, 3, Q_REGS),
        False,
    ),
    (AttentionProblem(1, 2, 300, 300, 128), TileConfig(64, 64, 16, 4, 2, Q_REGS), True),
    (
        AttentionProblem(1, 2, 300, 300, 64, causal=True),
        TileConfig(128, 64, 16, 4, 2, Q_REGS),
        False,
    ),
    (AttentionProblem(1, 2, 300, 300, 48), TileConfig(64, 64, 16, 2, 2, Q_REGS), False),
    (
        AttentionProblem(1, 2, 300, 300, 112, causal=True),
        TileConfig(128, 32, 16, 8, 3, Q_SMEM),
        True,
    ),
    # head_dim 200 pads to 208 for the mmas; head_dim 40 on a 4:1 GQA window.
    (AttentionProblem(1, 2, 300, 300, 200), TileConfig(128, 32, 16, 8, 3, Q_SMEM), False),
    (
        AttentionProblem(1, 4, 77, 130, 40, heads_kv=1, window_left=32, window_right=8),
        TileConfig(64, 64, 16, 4, 3, Q_REGS),
        True,
    ),
    (GemmProblem(333, 129, 71), TileConfig(32, 32, 16, 2, 2), True),
    (GemmProblem(333, 129, 71, "bf16"), TileConfig(128, 64, 64, 8, 4), False),
    (GemmProblem(4096, 4096, 4096), TileConfig(128, 128, 64, 8, 3), True),
    # The 256-wide tiles at their most registers (ptxas: 211-220, no spills on sm_80/sm_90).
    (GemmProblem(4096, 4096, 4096), TileConfig(128, 256, 64, 8, 2), False),
    (GemmProblem(1000, 1000, 1000, "bf16"), TileConfig(256, 128, 64, 8, 2), True),
]


def _name(problem: Problem) -> str:
    return f"{problem.family}-{problem.dtype}-{problem.shape_str()}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("problem", DEFAULT_PROBLEMS, ids=_name)
def test_default_config_compiles_without_spills_on_tensor_cores(
    problem: Problem, arch: str
) -> None:
    family = get_family(problem.family)
    config = family.default_config(problem, arch)
    compiled = compile_kernel(render(family, problem, config, specialized=False), arch=arch)

    assert compiled.resources.spill_store_bytes == 0, compiled.log
    assert compiled.resources.spill_load_bytes == 0, compiled.log
    counts = instruction_counts(compiled.cubin)
    for mnemonic in ("HMMA", "LDSM", "LDGSTS"):
        assert counts.get(mnemonic, 0) > 0, f"{mnemonic} missing from SASS: {sorted(counts)}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    "problem,config,specialized", SAMPLE, ids=[f"{_name(p)}-{c}" for p, c, _ in SAMPLE]
)
def test_sampled_config_compiles_without_spills(
    problem: Problem, config: TileConfig, specialized: bool, arch: str
) -> None:
    family = get_family(problem.family)
    rendered = render(family, problem, config, specialized=specialized, arch=arch)
    compiled = compile_kernel(rendered, arch=arch)

    assert compiled.resources.spill_bytes == 0, compiled.log
    assert compiled.resources.registers <= 255


def test_default_kernels_issue_each_cp_async_once_and_take_maxima_with_fmnmx() -> None:
    # The copy loops unroll completely: one LDGSTS per 16-byte chunk a thread copies (Q, the
    # prologue's K/V stages and the loop's one K/V stage; gemm's A and B stages), no runtime
    # trip counts. The softmax row maxima are FMNMX, not FSETP + FSEL pairs. Both compile
    # their copies twice (an unchecked whole-tile path and a checked edge path), each fully
    # unrolled.
    attention = AttentionProblem(8, 16, 2048, 2048, 64)
    gemm = GemmProblem(4096, 4096, 4096)
    for problem in (attention, gemm):
        family = get_family(problem.family)
        config = family.default_config(problem, "sm_90")
        rendered = render(family, problem, config, specialized=False, arch="sm_90")
        counts = instruction_counts(compile_kernel(rendered, arch="sm_90").cubin)
        bodies = 2
        if problem is attention:
            rows = config.block_m + config.num_stages * 2 * config.block_n
            chunks = rows * (attention.head_dim // 8)
            scores_per_thread = config.block_m * config.block_n // config.num_threads
            assert counts.get("FMNMX", 0) >= scores_per_thread, counts
        else:
            tile_elems = config.block_m * config.block_k + config.block_k * config.block_n
            chunks = config.num_stages * tile_elems // 8
        assert counts["LDGSTS"] == bodies * chunks // config.num_threads, counts
