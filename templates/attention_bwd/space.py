"""The attention_bwd tile space: parameters, validity rules, exact shared memory, default tiles."""

from __future__ import annotations

from tessera_core.hardware import ceil_div
from tessera_core.space import (
    Constraint,
    Param,
    Space,
    grid_within_arch,
    smem_within_arch,
    threads_within_arch,
)
from tessera_core.types import (
    DTYPE_BYTES,
    AttentionBackwardProblem,
    Problem,
    TileConfig,
)

MMA_M = 16  # rows of one mma.m16n8k16 tile
MMA_K = 16  # reduction depth of one mma (block_k is fixed to it: the kernel has no K chunking)
MMA_N = 8  # columns of one mma accumulator tile
ROW_PAD_ELEMS = 8  # 16 bytes of padding per shared-memory row: ldmatrix rows hit distinct banks
MAX_HEAD_DIM = 256
# Padded head_dim columns of dK and dV one KV block keeps in registers: above it the columns are
# split over D_SPLIT blocks per key tile (each recomputes S and dP, FlashAttention-2's head_dim
# 256 backward splits its warps over head_dim instead).
PART_HEAD_DIM = 128
# With softcap or ALiBi (their temporaries next to S) 128 columns spill at head_dim 256 (8-16
# bytes, atomic dQ, every variant at once on sm_80 and sm_90): such problems take 96.
LOGITS_PART_HEAD_DIM = 96
HEAD_DIM_STEP = 8  # one 16-byte chunk: the copies move whole chunks; the mmas pad to MMA_K
FLOAT_BYTES = 4
SMEM_ALIGN_BYTES = 16
# Per-thread registers the live fragments may take (see fragment_registers); above it ptxas
# spills. Calibrated with NVRTC on sm_80 and sm_90 (bf16, causal, both dQ modes, 1-2 stages):
# configurations estimated at 200-232 spill 8-264 bytes on at least one arch (head_dim 96 with
# 64-row tiles, block_m 128 with atomic dQ), all at 280 and above; every one of the 160 valid
# configurations at head_dim 16-128 (<= 196) compiles without spills on both (the head_dim 64
# default: 239 registers on sm_80, 246 on sm_90). tests/templates/test_attention_bwd_compile.py
# re-checks them (slow).
FRAGMENT_REGISTER_BUDGET = 196
# Configurations estimated above the budget that ptxas nevertheless compiles without spills,
# admitted by name as (head_dim, block_m, block_n, num_warps, num_stages, deterministic): the
# deterministic kernel (its KV blocks neither stage dS nor add into dQ) with 64 x 64 tiles, 4
# warps, one stage, at head_dim 96-128, where the budget leaves only 32 x 32 tiles. Measured
# with NVRTC 13.0 on sm_80 and sm_90, generic kernels (bf16 causal, fp16 non-causal) and the
# specialized ones of 8x16x2048 (fp16, both masks, head_dim 96 and 128): 238-255
# registers, 0 spill bytes. The estimate cannot tell them from their spilling neighbours (two
# stages, or 64 x 32 tiles with 2 warps, spill 8-284 bytes at head_dim 112; atomic 64 x 64
# spills 24-48 bytes at head_dim 128 on sm_90). The slow sweep of
# tests/templates/test_attention_bwd_compile.py re-checks them with every valid configuration.
SPILL_FREE_ABOVE_BUDGET = frozenset((d, 64, 64, 4, 1, 1) for d in (96, 112, 128))


def as_problem(problem: Problem) -> AttentionBackwardProblem:
    """`problem` as an AttentionBackwardProblem; TypeError for any other problem."""
    if not isinstance(problem, AttentionBackwardProblem):
        raise TypeError(
            f"attention_bwd needs an AttentionBackwardProblem, got {type(problem).__name__}"
        )
    return problem


def deterministic(config: TileConfig) -> bool:
    """Whether dQ comes from separate query blocks (no atomics) rather than fp32 atomics."""
    return bool(config.option("deterministic", 0))


def padded_head_dim(head_dim: int) -> int:
    """head_dim rounded up to the mma depth: the columns the kernel's mmas run over."""
    return ceil_div(head_dim, MMA_K) * MMA_K


def d_split(problem: Problem) -> int:
    """KV blocks per key tile, each owning a part of head_dim's columns of dK, dV (and dQ)."""
    p = as_problem(problem)
    logits = p.softcap > 0.0 or p.alibi != "none"
    d = padded_head_dim(p.head_dim)
    return ceil_div(d, LOGITS_PART_HEAD_DIM if logits and d > PART_HEAD_DIM else PART_HEAD_DIM)


def part_head_dim(problem: Problem) -> int:
    """Columns of dK and dV one KV block accumulates (whole 16-column pairs)."""
    pairs = padded_head_dim(as_problem(problem).head_dim) // MMA_K
    return ceil_div(pairs, d_split(problem)) * MMA_K


def kv_blocks(problem: Problem, config: TileConfig) -> int:
    return ceil_div(as_problem(problem).seq_kv, config.block_n)


def grid(problem: Problem, config: TileConfig) -> tuple[int, int, int]:
    """Launch grid: (KV blocks x head_dim parts [+ query blocks when deterministic], heads,
    batch)."""
    p = as_problem(problem)
    blocks = kv_blocks(p, config) * d_split(p)
    if deterministic(config):
        blocks += ceil_div(p.seq_q, config.block_m)
    return (blocks, p.heads, p.batch)


def floats_offset_bytes(problem: Problem, config: TileConfig) -> int:
    """Where the query tile's LSE and D (fp32) start: after the larger of the two block kinds'
    16-bit tiles.

    KV block: K and V tiles, num_stages (Q, dO) tile pairs, dS [block_m][block_n + pad] (atomic
    dQ only). Query block (deterministic only): Q and dO tiles, num_stages (K, V) tile pairs.
    """
    row_bytes = (padded_head_dim(as_problem(problem).head_dim) + ROW_PAD_ELEMS) * DTYPE_BYTES
    bm, bn, stages = config.block_m, config.block_n, config.num_stages
    kv_block = (2 * bn + 2 * stages * bm) * row_bytes
    if deterministic(config):
        q_block = (2 * bm + 2 * stages * bn) * row_bytes
        tiles = max(kv_block, q_block)
    else:
        tiles = kv_block + bm * (bn + ROW_PAD_ELEMS) * DTYPE_BYTES
    return ceil_div(tiles, SMEM_ALIGN_BYTES) * SMEM_ALIGN_BYTES


def smem_bytes(problem: Problem, config: TileConfig) -> int:
    """Dynamic shared memory: the 16-bit tiles, then LSE and D of one query tile (fp32)."""
    return floats_offset_bytes(problem, config) + 2 * config.block_m * FLOAT_BYTES


def fragment_registers(problem: Problem, config: TileConfig) -> int:
    """32-bit registers per thread held by live fragments, the larger of the two block kinds.

    KV block: dK and dV accumulators (of its part of head_dim) and S^T, dP^T of its key tiles
    (key_tiles * (part_head_dim + block_m)),
    the K, V A fragments of one step and the packed P^T, dS^T of one step (16 per key tile),
    one pair of B fragments (8), and the LSE and D of the query columns the lane touches
    (block_m / 4, hoisted by ptxas). Query block (deterministic only): S, dP (query_tiles *
    block_n), dQ (query_tiles * d / 2), Q and dO A fragments (8 per query tile), one B pair.
    """
    p = as_problem(problem)
    d = padded_head_dim(p.head_dim)
    bm, bn, warps = config.block_m, config.block_n, config.num_warps
    key_tiles = max(1, bn // (MMA_M * warps))
    query_tiles = max(1, bm // (MMA_M * warps))
    kv_block = key_tiles * (part_head_dim(p) + bm) + 16 * key_tiles + 8 + bm // 4
    q_block = 0
    if deterministic(config):
        q_block = query_tiles * (bn + d // 2) + 8 * query_tiles + 8
        # A query block's softcap/ALiBi transform runs next to all of dQ (not split).
        q_block += Q_BLOCK_SOFTCAP_REGISTERS if p.softcap > 0.0 else 0
        q_block += Q_BLOCK_ALIBI_REGISTERS if p.softcap == 0.0 and p.alibi != "none" else 0
    return max(kv_block, q_block) + variant_registers(p)


# Registers the variants add next to the fragments: softcap's tanh temporaries or the ALiBi
# slope and bias indices, the padded columns' predicates (the window's bounds stay in the
# constant bank). ptxas (NVRTC 13), the default and the largest deterministic configuration of
# each variant alone and all together (GQA, bshd, window, softcap, ALiBi) at head_dim 64 and 128,
# and head_dim 40, 72, 120, on sm_80 and sm_90: 190-255 registers, 0 spill bytes; with 8 for the
# logits head_dim 128 would have no valid tile although 32 x 32 compiles without spills.
WINDOW_REGISTERS = 0
# A query block (deterministic) transforms S next to all of dQ. ptxas, 32 x 32 tiles, 2 warps,
# one stage, softcap: head_dim 136-160 (estimated 120-132 without this) 250-255 registers, no
# spills; 176-240 (136-172) spill 80-424 bytes on sm_80 and sm_90, so softcap counts 64 (160
# sits at the budget). ALiBi alone:
# head_dim 200 compiles clean at 32 x 32; 64 x 64 with 4 warps (estimated 172) spills 40 bytes.
Q_BLOCK_SOFTCAP_REGISTERS = 64
Q_BLOCK_ALIBI_REGISTERS = 16
LOGITS_REGISTERS = 4
PADDED_REGISTERS = 4


def variant_registers(problem: AttentionBackwardProblem) -> int:
    """Registers the variants add to fragment_registers (plain, unpadded attention: 0)."""
    regs = WINDOW_REGISTERS if problem.has_window else 0
    regs += LOGITS_REGISTERS if problem.softcap > 0.0 or problem.alibi != "none" else 0
    return regs + (PADDED_REGISTERS if problem.head_dim % MMA_K else 0)


def _head_dim(config: TileConfig, problem: Problem, arch: str) -> str | None:
    d = as_problem(problem).head_dim
    if d % HEAD_DIM_STEP or d > MAX_HEAD_DIM:
        return f"head_dim={d} must be a multiple of {HEAD_DIM_STEP} and at most {MAX_HEAD_DIM}"
    return None


def _not_varlen(config: TileConfig, problem: Problem, arch: str) -> str | None:
    if as_problem(problem).varlen:
        return "varlen=True: the attention backward takes padded [batch, ...] tensors only"
    return None


def _warps_tile(config: TileConfig, problem: Problem, arch: str) -> str | None:
    rows = MMA_M * config.num_warps
    if config.block_m % rows or config.block_n % rows:
        return (
            f"block_m={config.block_m} and block_n={config.block_n} must be multiples of 16 rows "
            f"x num_warps={config.num_warps} = {rows} (each warp owns whole 16-row key tiles of "
            "dK, dV and whole 16-row query tiles of dQ)"
        )
    return None


def _registers(config: TileConfig, problem: Problem, arch: str) -> str | None:
    regs = fragment_registers(problem, config)
    p = as_problem(problem)
    shape = (p.head_dim, config.block_m, config.block_n, config.num_warps, config.num_stages)
    plain = p.kv_heads == p.heads and p.layout == "bhsd" and variant_registers(p) == 0
    if plain and (*shape, int(deterministic(config))) in SPILL_FREE_ABOVE_BUDGET:
        return None
    if regs > FRAGMENT_REGISTER_BUDGET:
        return (
            f"block_m={config.block_m}, block_n={config.block_n}, num_warps={config.num_warps}: "
            f"fragments need {regs} registers per thread > {FRAGMENT_REGISTER_BUDGET} (would "
            "spill); use more warps or smaller tiles"
        )
    return None


SPACE = Space(
    family="attention_bwd",
    params=(
        Param("block_m", (32, 64, 128)),
        Param("block_n", (32, 64, 128)),
        Param("block_k", (MMA_K,)),
        Param("num_warps", (2, 4, 8)),
        Param("num_stages", (1, 2)),
        Param("deterministic", (0, 1)),
    ),
    constraints=(
        Constraint("head_dim", _head_dim),
        Constraint("not_varlen", _not_varlen),
        Constraint("warps_tile_blocks", _warps_tile),
        Constraint("shared_memory", smem_within_arch(smem_bytes)),
        Constraint("threads", threads_within_arch),
        Constraint("grid", grid_within_arch(grid)),
        Constraint("registers", _registers),
    ),
)


def tile(bm: int, bn: int, warps: int, stages: int, det: int = 0) -> TileConfig:
    """A configuration of this space (block_k is fixed to the mma depth)."""
    return TileConfig(bm, bn, MMA_K, warps, stages, options=(("deterministic", det),))


def default_config(problem: Problem, arch: str) -> TileConfig:
    """The atomic-dQ kernel with the largest tiles this template fits in registers.

    head_dim <= 64: 64 queries x 64 keys, 4 warps; head_dim above 64: 32 x 32, 2 warps (the
    larger tiles exceed FRAGMENT_REGISTER_BUDGET). Falls back to the first valid configuration
    in a fixed preference order.
    """
    d = as_problem(problem).head_dim
    preferred = [tile(64, 64, 4, 2)] if d <= 64 else [tile(32, 32, 2, 2)]
    fallbacks = [tile(64, 32, 2, 2), tile(32, 32, 2, 2), tile(32, 32, 2, 1)]
    return SPACE.first_valid(preferred + fallbacks, problem, arch)
