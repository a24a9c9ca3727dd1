"""The attention_sm90 tile space: parameters, validity rules, exact shared memory, defaults."""

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
from tessera_core.types import FP8_DTYPE, AttentionProblem, Problem, TileConfig, dtype_bytes

ARCH = "sm_90a"  # wgmma, setmaxnreg and the 3-D TMA exist only in the arch-specific feature set
HEAD_DIMS = (64, 128)  # whole 128-byte TMA box rows; O's wgmma N (64 or 128)
FP8_HEAD_DIM = 128  # e4m3: one 128-byte row of Q and K, and O's wgmma N of 128
FP8_BLOCK_N = 128  # e4m3: V^T tiles are rows of 128 keys (128 bytes, the 128B swizzle)
WGMMA_M = 64  # query rows per consumer warpgroup
TMA_BOX = 64  # rows per box (and columns of a 16-bit box: one 128-byte swizzled row)
ROW_BYTES = 128
WARPGROUP_WARPS = 4
SMEM_ALIGN_SLACK_BYTES = 1024  # the 128B swizzle pattern starts on a 1024-byte boundary
BARRIER_BYTES = 8
TMA_ALIGN_ELEMS = 8  # TMA strides are multiples of 16 bytes: head_dim * 2 bytes is
PINGPONG = "pingpong"  # option: 1 = consumer warpgroups take turns issuing their wgmmas
# Registers per consumer thread after setmaxnreg.inc, by consumer warpgroups (the template's
# CONSUMER_REGS): ptxas allocates the consumer branch under this count, not under the launch's
# 65536 / threads (which it reports: 255, 168, 128).
CONSUMER_REGISTERS = {1: 256, 2: 240, 3: 160}
# What the fragments (S: block_n / 2, P: block_n / 4 packed, O: head_dim / 2) must leave to
# addresses, the softmax state and the loop. Measured with NVRTC 13 for sm_90a: 112 fragment
# registers under 160 compile without spills; 128 spill 224 bytes when specialized (not when
# generic), 160 and 176 spill 272 and 400; 208 under 240 do not.
FRAGMENT_REGISTER_HEADROOM = 40


def as_problem(problem: Problem) -> AttentionProblem:
    """`problem` as this family's AttentionProblem; TypeError for another family's."""
    if not isinstance(problem, AttentionProblem):
        raise TypeError(f"attention_sm90 needs an AttentionProblem, got {type(problem).__name__}")
    return problem


def consumers(config: TileConfig) -> int:
    """Consumer warpgroups: every warpgroup but the producer."""
    return config.num_warps // WARPGROUP_WARPS - 1


def pingpong(config: TileConfig) -> bool:
    return config.option(PINGPONG, 0) == 1


def grid(problem: Problem, config: TileConfig) -> tuple[int, int, int]:
    """Launch grid: (query blocks, heads, batch)."""
    p = as_problem(problem)
    return (ceil_div(p.seq_q, config.block_m), p.heads, p.batch)


def is_fp8(problem: Problem) -> bool:
    return as_problem(problem).dtype == FP8_DTYPE


def stage_bytes(problem: Problem, config: TileConfig) -> int:
    """One K tile and one V (fp8: V^T) tile of block_n x head_dim elements."""
    p = as_problem(problem)
    return 2 * config.block_n * p.head_dim * dtype_bytes(p.dtype)


def smem_bytes(problem: Problem, config: TileConfig) -> int:
    """1024 alignment slack + the Q tile + the K/V stages + q_full and k_full, v_full, empty per
    stage."""
    p = as_problem(problem)
    q_bytes = config.block_m * p.head_dim * dtype_bytes(p.dtype)
    barriers = (1 + 3 * config.num_stages) * BARRIER_BYTES
    return (
        SMEM_ALIGN_SLACK_BYTES
        + q_bytes
        + config.num_stages * stage_bytes(problem, config)
        + barriers
    )


def fragment_registers(problem: Problem, config: TileConfig) -> int:
    """Registers per consumer thread held by S, the packed P (2 or 4 per register) and O."""
    p = as_problem(problem)
    p_regs = config.block_n // 8 if is_fp8(p) else config.block_n // 4
    return config.block_n // 2 + p_regs + p.head_dim // 2


def register_budget(config: TileConfig) -> int:
    return CONSUMER_REGISTERS.get(consumers(config), 0) - FRAGMENT_REGISTER_HEADROOM


def _arch(config: TileConfig, problem: Problem, arch: str) -> str | None:
    if arch != ARCH:
        return f"attention_sm90 runs on {ARCH} only (wgmma, setmaxnreg), not {arch}"
    return None


def serves(problem: Problem) -> bool:
    """Whether this family computes `problem`: plain or causal bhsd attention with head_dim 64
    or 128 (fp8: 128)."""
    if not isinstance(problem, AttentionProblem) or variant_refusal(problem) is not None:
        return False
    return problem.head_dim == FP8_HEAD_DIM if is_fp8(problem) else problem.head_dim in HEAD_DIMS


def _head_dim(config: TileConfig, problem: Problem, arch: str) -> str | None:
    d = as_problem(problem).head_dim
    if is_fp8(problem) and d != FP8_HEAD_DIM:
        return f"head_dim={d}: attention_sm90 serves e4m3 at head_dim {FP8_HEAD_DIM}"
    if d not in HEAD_DIMS:
        return (
            f"head_dim={d}: attention_sm90 serves {', '.join(map(str, HEAD_DIMS))}; use the "
            "mma.sync attention family"
        )
    return None


def variant_refusal(problem: AttentionProblem) -> str | None:
    """Why the kernel cannot compute this variant of attention (it reads one K/V head per query
    head from [batch, heads, seq, head_dim] tensors, with a plain or causal mask), else None."""
    found = []
    if problem.kv_heads != problem.heads:
        found.append(f"heads_kv={problem.kv_heads} (GQA/MQA)")
    if problem.has_window:
        found.append(f"window_size=({problem.window_left}, {problem.window_right})")
    if problem.softcap:
        found.append(f"softcap={problem.softcap:g}")
    if problem.alibi != "none":
        found.append(f"alibi={problem.alibi}")
    if problem.varlen:
        found.append("varlen")
    elif problem.layout != "bhsd":
        found.append(f"layout={problem.layout}")
    if not found:
        return None
    return (
        f"{', '.join(found)}: attention_sm90 serves plain or causal bhsd attention; use the "
        "mma.sync attention family"
    )


def _variant(config: TileConfig, problem: Problem, arch: str) -> str | None:
    return variant_refusal(as_problem(problem))


def _warpgroups(config: TileConfig, problem: Problem, arch: str) -> str | None:
    n_consumers = consumers(config)
    if config.num_warps % WARPGROUP_WARPS or n_consumers not in CONSUMER_REGISTERS:
        return (
            f"num_warps={config.num_warps}: a producer and 1 to {max(CONSUMER_REGISTERS)} "
            "consumer warpgroups"
        )
    if config.block_m != WGMMA_M * n_consumers:
        return (
            f"block_m={config.block_m}, num_warps={config.num_warps}: each of the {n_consumers} "
            f"consumer warpgroups owns {WGMMA_M} rows, so block_m must be {WGMMA_M * n_consumers}"
        )
    if pingpong(config) and n_consumers < 2:
        return f"{PINGPONG}=1 needs at least two consumer warpgroups (num_warps >= 12)"
    return None


def _tile(config: TileConfig, problem: Problem, arch: str) -> str | None:
    if config.block_k != TMA_BOX:
        return f"block_k={config.block_k}: the TMA box width, {TMA_BOX} columns"
    if config.block_n % TMA_BOX:
        return f"block_n={config.block_n}: a multiple of {TMA_BOX} (the S wgmma's N)"
    if is_fp8(problem) and config.block_n != FP8_BLOCK_N:
        return f"block_n={config.block_n}: e4m3 takes {FP8_BLOCK_N} (V^T rows of 128 bytes)"
    return None


def _registers(config: TileConfig, problem: Problem, arch: str) -> str | None:
    regs = fragment_registers(problem, config)
    budget = register_budget(config)
    if regs > budget:
        return (
            f"block_n={config.block_n}, head_dim={as_problem(problem).head_dim}, "
            f"num_warps={config.num_warps}: {regs} fragment registers per consumer thread > "
            f"{budget} (would spill); use a smaller block_n or fewer consumer warpgroups"
        )
    return None


SPACE = Space(
    family="attention_sm90",
    params=(
        Param("block_m", (64, 128, 192)),
        Param("block_n", (64, 128, 192)),
        Param("block_k", (TMA_BOX,)),
        Param("num_warps", (8, 12, 16)),
        Param("num_stages", (2, 3, 4)),
        Param(PINGPONG, (0, 1), default=0),
    ),
    constraints=(
        Constraint("sm_90a", _arch),
        Constraint("head_dim", _head_dim),
        Constraint("variant", _variant),
        Constraint("warpgroups", _warpgroups),
        Constraint("tile", _tile),
        Constraint("shared_memory", smem_within_arch(smem_bytes)),
        Constraint("threads", threads_within_arch),
        Constraint("grid", grid_within_arch(grid)),
        Constraint("registers", _registers),
    ),
)


def default_config(problem: Problem, arch: str) -> TileConfig:
    """FlashAttention-3's forward tiles where they fit: two consumer warpgroups of 64 rows with
    ping-pong and 128-key tiles, three stages first; smaller tiles for what does not fit.

    Three stages because they measured faster than two in 7 of 8 side-by-side shapes on an H100
    (fp16, b8 h16, seq 2048/8192, d64/d128, causal or not; 596 vs 546 TFLOP/s at d128 seq 8192;
    docs/device-reports/2026-11-26-h100.md). The tuner still searches every stage count."""

    def tile(block_m: int, block_n: int, stages: int, ping: int) -> TileConfig:
        warps = WARPGROUP_WARPS * (1 + block_m // WGMMA_M)
        return TileConfig(block_m, block_n, TMA_BOX, warps, stages, ((PINGPONG, ping),))

    preferred = [
        tile(128, 128, 3, 1),
        tile(128, 128, 2, 1),
        tile(128, 64, 2, 1),
        tile(64, 64, 2, 0),
    ]
    return SPACE.first_valid(preferred, problem, arch)
