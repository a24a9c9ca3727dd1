"""The attention_decode tile space: parameters, validity rules, shared memory, default tiles."""

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
from tessera_core.types import DTYPE_BYTES, AttentionDecodeProblem, Problem, TileConfig

MMA_M = 16  # packed query rows of one mma.m16n8k16 row tile
MMA_K = 16  # reduction depth of one mma
MMA_N = 8  # columns of one mma accumulator tile
ROW_PAD_ELEMS = 8  # 16 bytes of padding per 16-bit shared-memory row: ldmatrix rows change bank
RED_PAD_FLOATS = 4  # padding per fp32 row of the cross-warp reduction buffer
MAX_HEAD_DIM = 256
FLOAT_BYTES = 4
NUM_SPLITS = "num_splits"  # option: KV splits of the flash-decoding pass (a run may override it)
SPLIT_CHOICES = (1, 2, 4, 8, 16, 32)
# Registers per thread the fragments may hold (O, S of the warp's key slice, one k-step of Q
# and K fragments) and that may stay live across the main loop (O and the softmax state):
# the forward family's measured budgets (templates/attention/space.py, Q re-read from shared
# memory), which the slow compile test re-checks for this template on sm_80 and sm_90.
FRAGMENT_REGISTER_BUDGET = 200
CARRIED_REGISTER_BUDGET = 136


def as_problem(problem: Problem) -> AttentionDecodeProblem:
    """`problem` as an AttentionDecodeProblem; TypeError for any other problem."""
    if not isinstance(problem, AttentionDecodeProblem):
        raise TypeError(
            f"attention_decode needs an AttentionDecodeProblem, got {type(problem).__name__}"
        )
    return problem


def num_splits(config: TileConfig) -> int:
    return config.option(NUM_SPLITS, 1)


def packed_rows(problem: Problem) -> int:
    """Rows of the packed M dimension: the query heads of one KV head times the query tokens."""
    p = as_problem(problem)
    return p.heads // p.heads_kv * p.seq_q


def m_blocks(problem: Problem, config: TileConfig) -> int:
    return ceil_div(packed_rows(problem), config.block_m)


def grid(problem: Problem, config: TileConfig) -> tuple[int, int, int]:
    """Launch grid: (KV splits, KV heads x packed-row blocks, batch)."""
    p = as_problem(problem)
    return (num_splits(config), p.heads_kv * m_blocks(p, config), p.batch)


def counters(problem: Problem, config: TileConfig) -> int:
    """int32 arrival counters (one per KV head and row block of each batch entry), zeroed once;
    the block that combines a group's splits resets its counter to zero."""
    return as_problem(problem).batch * as_problem(problem).heads_kv * m_blocks(problem, config)


def row_bytes(problem: Problem) -> int:
    return (as_problem(problem).head_dim + ROW_PAD_ELEMS) * DTYPE_BYTES


def reduction_bytes(problem: Problem, config: TileConfig) -> int:
    """The cross-warp reduction buffer: each warp's fp32 O rows, row maxima and row sums."""
    d = as_problem(problem).head_dim
    per_warp = config.block_m * (d + RED_PAD_FLOATS + 2) * FLOAT_BYTES
    return config.num_warps * per_warp


def smem_bytes(problem: Problem, config: TileConfig) -> int:
    """Q tile, then the larger of num_stages (K, V) tile pairs and the reduction buffer (it
    reuses the K/V stages once the loop is over), then one int (the last-block flag)."""
    q_tile = config.block_m * row_bytes(problem)
    kv_stages = config.num_stages * 2 * config.block_n * row_bytes(problem)
    return q_tile + max(kv_stages, reduction_bytes(problem, config)) + 16


def m_tiles(config: TileConfig) -> int:
    return config.block_m // MMA_M


def warp_keys(config: TileConfig) -> int:
    """Keys of a K/V tile each warp owns (warps split the tile's keys, not its rows)."""
    return config.block_n // config.num_warps


def carried_registers(problem: Problem, config: TileConfig) -> int:
    """O accumulators and softmax state, live across the whole main loop."""
    d = as_problem(problem).head_dim
    return m_tiles(config) * (d // 2 + 4)


def fragment_registers(problem: Problem, config: TileConfig) -> int:
    """Registers at the peak, S = Q K^T: carried + S + one k-step of Q and K fragments."""
    keys = warp_keys(config)
    return carried_registers(problem, config) + m_tiles(config) * (keys // 2 + 4) + keys // 4


def _head_dim(config: TileConfig, problem: Problem, arch: str) -> str | None:
    d = as_problem(problem).head_dim
    if d % MMA_K or d > MAX_HEAD_DIM:
        return f"head_dim={d} must be a multiple of {MMA_K} and at most {MAX_HEAD_DIM}"
    return None


def _block_m(config: TileConfig, problem: Problem, arch: str) -> str | None:
    if config.block_m % MMA_M:
        return f"block_m={config.block_m} must be a multiple of {MMA_M} (whole mma row tiles)"
    return None


def _warps_split_keys(config: TileConfig, problem: Problem, arch: str) -> str | None:
    if config.block_n % (MMA_K * config.num_warps):
        return (
            f"block_n={config.block_n} must be a multiple of 16 keys x num_warps="
            f"{config.num_warps} (each warp owns whole 16-key steps of every K/V tile)"
        )
    return None


def _page(config: TileConfig, problem: Problem, arch: str) -> str | None:
    page = as_problem(problem).page_size
    if page and page % MMA_K:
        return f"page_size={page} must be a multiple of {MMA_K} keys"
    return None


def _splits(config: TileConfig, problem: Problem, arch: str) -> str | None:
    tiles = ceil_div(as_problem(problem).seq_kv, config.block_n)
    if num_splits(config) > tiles:
        return (
            f"num_splits={num_splits(config)} exceeds the {tiles} key tiles of block_n="
            f"{config.block_n} in the bucket: the extra splits would have no keys"
        )
    return None


def _registers(config: TileConfig, problem: Problem, arch: str) -> str | None:
    tile = f"block_m={config.block_m}, block_n={config.block_n}, num_warps={config.num_warps}"
    carried = carried_registers(problem, config)
    if carried > CARRIED_REGISTER_BUDGET:
        return (
            f"{tile}: {carried} registers per thread live across the main loop > "
            f"{CARRIED_REGISTER_BUDGET} (would spill); use a smaller block_m"
        )
    peak = fragment_registers(problem, config)
    if peak > FRAGMENT_REGISTER_BUDGET:
        return (
            f"{tile}: fragments need {peak} registers per thread > {FRAGMENT_REGISTER_BUDGET} "
            "(would spill); use more warps or a smaller block_n"
        )
    return None


SPACE = Space(
    family="attention_decode",
    params=(
        Param("block_m", (16, 32, 64)),
        Param("block_n", (32, 64, 128)),
        Param("block_k", (MMA_K,)),
        Param("num_warps", (1, 2, 4)),
        Param("num_stages", (1, 2)),
        Param(NUM_SPLITS, SPLIT_CHOICES, default=1),
    ),
    constraints=(
        Constraint("head_dim", _head_dim),
        Constraint("block_m_whole_row_tiles", _block_m),
        Constraint("warps_split_keys", _warps_split_keys),
        Constraint("page_size", _page),
        Constraint("splits_have_keys", _splits),
        Constraint("shared_memory", smem_within_arch(smem_bytes)),
        Constraint("threads", threads_within_arch),
        Constraint("grid", grid_within_arch(grid)),
        Constraint("registers", _registers),
    ),
)


def tile(bm: int, bn: int, warps: int, stages: int, splits: int = 1) -> TileConfig:
    """A configuration of this space (block_k is fixed to the mma depth)."""
    return TileConfig(bm, bn, MMA_K, warps, stages, options=((NUM_SPLITS, splits),))


def heuristic_splits(problem: Problem, config: TileConfig, arch: str) -> int:
    """FlashAttention-2's rule of thumb: split the keys until the grid fills the SMs about
    once (blocks = batch x KV heads x row blocks), never into splits of under one tile each."""
    p = as_problem(problem)
    blocks = p.batch * p.heads_kv * m_blocks(p, config)
    sms = arch_spec(arch).sm_count
    tiles = ceil_div(p.seq_kv, config.block_n)
    best = 1
    for splits in SPLIT_CHOICES:
        if splits > tiles or blocks * best >= sms:
            break
        best = splits
    return best


def default_config(problem: Problem, arch: str) -> TileConfig:
    """16 packed rows (one mma row tile: a decode step's few rows waste least), 64-key tiles
    over 4 warps, two stages, and the heuristic split count; falls back in a fixed order."""
    p = as_problem(problem)
    bm = 16 if packed_rows(p) <= 16 or p.head_dim > 128 else 32
    preferred = [tile(bm, 64, 4, 2), tile(16, 64, 4, 2), tile(16, 64, 2, 2), tile(16, 32, 2, 1)]
    base = SPACE.first_valid(preferred, problem, arch)
    return tile(base.block_m, base.block_n, base.num_warps, base.num_stages,
                heuristic_splits(p, base, arch))  # fmt: skip
