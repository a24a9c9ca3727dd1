"""The attention kernel's SASS: one barrier per main-loop iteration, FlashAttention-2's 4-warp
tiles without spills, and a space whose valid configurations are all distinct kernels."""

from __future__ import annotations

import collections
import re

import pytest

from generator.compile import compile_kernel
from generator.render import render
from generator.sass import disassemble
from templates.attention import space
from templates.registry import get_family
from tessera_core.types import AttentionProblem, TileConfig

FAMILY = get_family("attention")
ARCHS = ("sm_80", "sm_90")
# "/*1e70*/  @!P0 BRA 0x1de0 ;" -> address, opcode, operands.
_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T\d]\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def main_loop_counts(sass: str) -> dict[str, int]:
    """Base-mnemonic counts of the backward-branch loop holding the most HMMAs (the main loop)."""
    lines = [
        (int(address, 16), opcode, operands) for address, opcode, operands in _LINE.findall(sass)
    ]
    best: list[str] = []
    for address, opcode, operands in lines:
        target = re.search(r"0x([0-9a-f]+)", operands)
        if not opcode.startswith("BRA") or target is None or int(target.group(1), 16) >= address:
            continue
        start = int(target.group(1), 16)
        body = [op for at, op, _ in lines if start <= at <= address]
        if sum(op.startswith("HMMA") for op in body) > sum(op.startswith("HMMA") for op in best):
            best = body
    assert best, "no loop with HMMA found in the SASS"
    return dict(collections.Counter(op.split(".", 1)[0] for op in best))


def tile(block_m: int, block_n: int, warps: int, stages: int, q_in_regs: int) -> TileConfig:
    return TileConfig(block_m, block_n, 16, warps, stages, options=(("q_in_regs", q_in_regs),))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    ("config", "barriers"),
    [(tile(64, 64, 4, 2, 1), 1), (tile(64, 64, 4, 3, 0), 1), (tile(64, 32, 2, 1, 0), 2)],
    ids=["q-regs-2-stages", "q-smem-3-stages", "1-stage"],
)
def test_main_loop_has_one_barrier_per_iteration(
    config: TileConfig, barriers: int, arch: str
) -> None:
    # The refill of the stage tile j-1 used is issued after iteration j's barrier; one stage
    # cannot be refilled while in use, so num_stages=1 keeps a second barrier.
    problem = AttentionProblem(2, 4, 1000, 1000, 64, causal=True)
    compiled = compile_kernel(
        render(FAMILY, problem, config, specialized=False, arch=arch), arch=arch
    )
    counts = main_loop_counts(disassemble(compiled.cubin))
    assert counts.get("BAR", 0) == barriers, counts
    m_tiles = space.m_tiles_per_warp(config)
    # S = QK^T and O += PV: 16x8x16 mmas per warp per key tile.
    hmma = m_tiles * (config.block_n // 8) * (64 // 16) + m_tiles * (64 // 8) * (
        config.block_n // 16
    )
    assert counts["HMMA"] == hmma, counts


# FlashAttention-2's forward tiles (4 warps of 32 rows, Q re-read from shared memory); head_dim
# 128 takes three stages, whose refill comes after the softmax (two spill on sm_80 and sm_90).
FA2_TILES = [
    (64, tile(128, 128, 4, 2, 0)),
    (128, tile(128, 64, 4, 3, 0)),
]
# Each tile as the generic kernel (sizes from Params) and as shape-specialized kernels (sizes
# compile-time constants, no ragged key tile), causal and not, both dtypes among them.
FA2_VARIANTS = [
    ((8, 16, 2048, 2048), "fp16", False, False),
    ((8, 16, 2048, 2048), "fp16", False, True),
    ((8, 16, 8192, 8192), "bf16", True, True),
]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("head_dim", "config"), FA2_TILES, ids=[f"d{d}-{c}" for d, c in FA2_TILES])
def test_flashattention2_tiles_compile_without_spills(
    head_dim: int, config: TileConfig, arch: str
) -> None:
    for (batch, heads, seq_q, seq_kv), dtype, causal, specialized in FA2_VARIANTS:
        problem = AttentionProblem(batch, heads, seq_q, seq_kv, head_dim, dtype, causal)
        assert FAMILY.space.violations(config, problem, arch) == []
        assert FAMILY.default_config(problem, arch) == config
        rendered = render(FAMILY, problem, config, specialized=specialized, arch=arch)
        resources = compile_kernel(rendered, arch=arch).resources
        variant = f"{problem.shape_str()} {dtype} causal={causal} specialized={specialized}"
        assert resources.spill_bytes == 0 and resources.stack_bytes == 0, (variant, resources)


@pytest.mark.parametrize(
    "problem",
    [
        AttentionProblem(1, 2, 65, 197, 64, causal=True),
        AttentionProblem(1, 2, 300, 300, 128, "bf16"),
        AttentionProblem(1, 2, 100, 77, 48),
    ],
    ids=["d64-causal", "d128", "d48"],
)
def test_every_valid_configuration_renders_a_distinct_kernel(problem: AttentionProblem) -> None:
    # Comments aside (none name a tunable today), two configurations that render the same source
    # would be one kernel tuned twice.
    sources: dict[str, TileConfig] = {}
    for config in FAMILY.space.valid_configs(problem, "sm_90"):
        source = render(FAMILY, problem, config, specialized=False, arch="sm_90").source
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("//"))
        assert code not in sources, f"{config} renders the same kernel as {sources.get(code)}"
        sources[code] = config
    assert len(sources) > 1
