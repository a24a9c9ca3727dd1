"""The attention_fwd tile space: parameters, validity rules, exact shared memory, default tiles."""

from __future__ import annotations

from tessera_core.hardware import arch_spec, ceil_div
from tessera_core.space import (
    Constraint,
    Param,
    Space,
    grid_within_arch,
    smem_within_arch,
    threads_within_arch,
)
from tessera_core.types import DTYPE_BYTES, AttentionProblem, Problem, TileConfig

MMA_M = 16  # query rows of one mma.m16n8k16 row tile
MMA_K = 16  # reduction depth of one mma
MMA_N = 8  # columns of one mma accumulator tile
ROW_PAD_ELEMS = 8  # 16 bytes of padding per shared-memory row: ldmatrix rows hit distinct banks
MAX_HEAD_DIM = 128
# Rough per-thread register budget for the live fragments (Q, O, S, one step of K, softmax
# state); the rest of the 255 goes to addresses, V fragments and loop state. Above it ptxas
# spills (sm_90, head_dim 64 and 128: no valid configuration spills).
FRAGMENT_REGISTER_BUDGET = 200


def as_problem(problem: Problem) -> AttentionProblem:
    """`problem` as this family's AttentionProblem; TypeError for another family's."""
    if not isinstance(problem, AttentionProblem):
        raise TypeError(f"attention_fwd needs an AttentionProblem, got {type(problem).__name__}")
    return problem


def smem_row_elems(head_dim: int) -> int:
    """Elements per shared-memory row of a Q, K or V tile (head_dim plus padding)."""
    return head_dim + ROW_PAD_ELEMS


def grid(problem: Problem, config: TileConfig) -> tuple[int, int, int]:
    """Launch grid: (query blocks, heads, batch)."""
    p = as_problem(problem)
    return (ceil_div(p.seq_q, config.block_m), p.heads, p.batch)


def smem_bytes(problem: Problem, config: TileConfig) -> int:
    """Dynamic shared memory of the template: one Q tile plus num_stages (K, V) tile pairs."""
    row_bytes = smem_row_elems(as_problem(problem).head_dim) * DTYPE_BYTES
    q_tile = config.block_m * row_bytes
    kv_stage = 2 * config.block_n * row_bytes
    return q_tile + config.num_stages * kv_stage


def m_tiles_per_warp(config: TileConfig) -> int:
    """16-row mma tiles each warp owns; warps split block_m along M."""
    return config.block_m // (MMA_M * config.num_warps)


def fragment_registers(problem: Problem, config: TileConfig) -> int:
    """32-bit registers per thread held by live fragments: Q, O and S accumulators, K step.

    block_k does not count: the fully unrolled S = Q K^T lets ptxas issue each K fragment's
    ldmatrix next to its mma, so a deep block_k holds no more registers than block_k=16
    (sm_90, head_dim 128, 64x64 tiles, 4 warps: 208, 206, 206, 202 registers for block_k 16,
    32, 64, 128). Counting a whole block_k chunk of K fragments rejected such configurations
    as spilling when they do not.
    """
    d = as_problem(problem).head_dim
    m_tiles = max(1, m_tiles_per_warp(config))
    q_regs = m_tiles * (d // MMA_K) * 4
    o_regs = m_tiles * (d // MMA_N) * 4
    s_regs = m_tiles * (config.block_n // MMA_N) * 4
    k_regs = (config.block_n // MMA_N) * 2
    softmax_regs = m_tiles * 2 * 2  # running max and sum of two rows per row tile
    return q_regs + o_regs + s_regs + k_regs + softmax_regs


def _head_dim(config: TileConfig, problem: Problem, arch: str) -> str | None:
    d = as_problem(problem).head_dim
    if d % MMA_K or d > MAX_HEAD_DIM:
        return f"head_dim={d} must be a multiple of {MMA_K} and at most {MAX_HEAD_DIM}"
    return None


def _block_k(config: TileConfig, problem: Problem, arch: str) -> str | None:
    d = as_problem(problem).head_dim
    if config.block_k % MMA_K or d % config.block_k:
        return f"block_k={config.block_k} must be a multiple of {MMA_K} that divides head_dim={d}"
    return None


def _warps_tile_m(config: TileConfig, problem: Problem, arch: str) -> str | None:
    rows = MMA_M * config.num_warps
    if config.block_m % rows:
        return (
            f"block_m={config.block_m} must be a multiple of 16 rows x num_warps="
            f"{config.num_warps} = {rows} (each warp owns whole 16-row mma tiles)"
        )
    return None


def _block_n(config: TileConfig, problem: Problem, arch: str) -> str | None:
    if config.block_n % MMA_K:
        return f"block_n={config.block_n} must be a multiple of {MMA_K} (P*V reduction steps)"
    return None


def _registers(config: TileConfig, problem: Problem, arch: str) -> str | None:
    regs = fragment_registers(problem, config)
    if regs > FRAGMENT_REGISTER_BUDGET:
        return (
            f"block_m={config.block_m}, block_n={config.block_n}, block_k={config.block_k}, "
            f"num_warps={config.num_warps}: fragments need {regs} registers per thread "
            f"> {FRAGMENT_REGISTER_BUDGET} (would spill); use more warps or smaller tiles"
        )
    return None


SPACE = Space(
    family="attention_fwd",
    params=(
        Param("block_m", (32, 64, 128)),
        Param("block_n", (32, 64, 128)),
        Param("block_k", (16, 32, 64, 128)),
        Param("num_warps", (2, 4, 8)),
        Param("num_stages", (1, 2, 3)),
    ),
    constraints=(
        Constraint("head_dim", _head_dim),
        Constraint("block_k_divides_head_dim", _block_k),
        Constraint("warps_tile_block_m", _warps_tile_m),
        Constraint("block_n_multiple_of_16", _block_n),
        Constraint("shared_memory", smem_within_arch(smem_bytes)),
        Constraint("threads", threads_within_arch),
        Constraint("grid", grid_within_arch(grid)),
        Constraint("registers", _registers),
    ),
)


def default_config(problem: Problem, arch: str) -> TileConfig:
    """FlashAttention-2's forward tiles, adapted to this template's registers and shared memory.

    Falls back to the first valid configuration in a fixed preference order.
    """
    d = as_problem(problem).head_dim
    spec = arch_spec(arch)
    big_smem = spec.max_smem_per_block_bytes >= 160 * 1024
    if d <= 64:
        # 32 query rows per warp (two row tiles) halve the K/V ldmatrix traffic per mma.
        preferred = [TileConfig(block_m=128, block_n=64, block_k=16, num_warps=4, num_stages=2)]
    elif big_smem:
        # Q and O of 32 rows x 128 would not fit the registers: 16 rows per warp, 8 warps.
        preferred = [TileConfig(block_m=128, block_n=64, block_k=32, num_warps=8, num_stages=2)]
    else:
        preferred = [TileConfig(block_m=64, block_n=64, block_k=32, num_warps=4, num_stages=2)]
    fallbacks = [
        TileConfig(block_m=64, block_n=64, block_k=16, num_warps=4, num_stages=2),
        TileConfig(block_m=64, block_n=32, block_k=16, num_warps=4, num_stages=1),
        TileConfig(block_m=32, block_n=32, block_k=16, num_warps=2, num_stages=1),
    ]
    return SPACE.first_valid(preferred + fallbacks, problem, arch)
