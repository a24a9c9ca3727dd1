"""The gemm_sm90 tile space: parameters, validity rules, exact shared memory, defaults."""

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
from tessera_core.types import ELEM_BYTES, GemmProblem, Problem, TileConfig

ARCH = "sm_90a"  # wgmma and setmaxnreg exist only in the arch-specific feature set
WGMMA_M = 64
TMA_BOX = 64  # rows per box; a box row is ROW_BYTES: 64 16-bit or 128 e4m3 elements of k
ROW_BYTES = 128
WARPGROUP_WARPS = 4
SMEM_ALIGN_SLACK_BYTES = 1024  # the 128B swizzle pattern starts on a 1024-byte boundary
BARRIER_BYTES = 8
TMA_ALIGN_BYTES = 16  # TMA global strides are multiples of 16 bytes
TMA_ALIGN_ELEMS = 8  # ... 8 16-bit elements (e4m3: K a multiple of 16, N of 8 for C's rows)
# f32 accumulator registers per consumer thread: BLOCK_N / 2 per 64-row tile, at most 128 and
# leaving REGISTER_HEADROOM of the per-thread cap ptxas compiles under (65536 / threads, at most
# 255, from __launch_bounds__(threads, 1)) to descriptors, addresses and the loop. Measured: N=256
# (128 accumulators) under 512 threads' cap of 128 fails ptxas ("register target of 154").
ACCUMULATOR_REGISTER_BUDGET = 128
REGISTER_FILE = 65536
MAX_REGS_PER_THREAD = 255
REGISTER_HEADROOM = 32


def as_problem(problem: Problem) -> GemmProblem:
    """`problem` as this family's GemmProblem; TypeError for another family's."""
    if not isinstance(problem, GemmProblem):
        raise TypeError(f"gemm_sm90 needs a GemmProblem, got {type(problem).__name__}")
    return problem


def consumers(config: TileConfig) -> int:
    """Consumer warpgroups: every warpgroup but the producer."""
    return config.num_warps // WARPGROUP_WARPS - 1


GROUP_M = 8  # row blocks per group of the grouped block order (L2 reuse of A and B)


def grid(problem: Problem, config: TileConfig) -> tuple[int, int, int]:
    """Launch grid: one block per output tile, (row blocks x column blocks, 1, 1), in grouped
    order (the kernel maps blockIdx.x to a tile)."""
    p = as_problem(problem)
    return (ceil_div(p.n, config.block_n) * ceil_div(p.m, config.block_m), 1, 1)


def stage_bytes(config: TileConfig) -> int:
    return (config.block_m + config.block_n) * ROW_BYTES


def smem_bytes(problem: Problem, config: TileConfig) -> int:
    """1024 alignment slack + stages x (A and B boxes) + a full and an empty barrier per stage."""
    as_problem(problem)
    return SMEM_ALIGN_SLACK_BYTES + config.num_stages * (stage_bytes(config) + 2 * BARRIER_BYTES)


def accumulator_registers(config: TileConfig) -> int:
    rows = config.block_m // max(1, consumers(config))
    return (rows // WGMMA_M) * config.block_n // 2


def _arch(config: TileConfig, problem: Problem, arch: str) -> str | None:
    if arch != ARCH:
        return f"gemm_sm90 runs on {ARCH} only (wgmma, setmaxnreg), not {arch}"
    return None


def block_k_elems(problem: Problem) -> int:
    """Elements of k in one 128-byte swizzled row: 64 (fp16, bf16) or 128 (e4m3)."""
    return ROW_BYTES // ELEM_BYTES[as_problem(problem).dtype]


def serves(problem: Problem) -> bool:
    """Whether TMA can read this gemm's operands: rows of A and B (B^T for e4m3) are multiples
    of 16 bytes, and e4m3's 16-bit output rows are too."""
    if not isinstance(problem, GemmProblem):
        return False
    k_align = TMA_ALIGN_BYTES // ELEM_BYTES[problem.dtype]
    return problem.n % TMA_ALIGN_ELEMS == 0 and problem.k % k_align == 0


def _tma_alignment(config: TileConfig, problem: Problem, arch: str) -> str | None:
    p = as_problem(problem)
    if not serves(p):
        k_align = TMA_ALIGN_BYTES // ELEM_BYTES[p.dtype]
        return (
            f"N={p.n}, K={p.k}: TMA needs rows of a multiple of 16 bytes (N a multiple of "
            f"{TMA_ALIGN_ELEMS}, K of {k_align} for {p.dtype}); use the mma.sync gemm family"
        )
    return None


def _warpgroups(config: TileConfig, problem: Problem, arch: str) -> str | None:
    n_consumers = consumers(config)
    if config.num_warps % WARPGROUP_WARPS or n_consumers < 1:
        return f"num_warps={config.num_warps}: a producer and at least one consumer warpgroup"
    if config.block_m % (n_consumers * WGMMA_M):
        return (
            f"block_m={config.block_m} does not split into {n_consumers} consumer warpgroups of "
            f"whole {WGMMA_M}-row wgmma tiles"
        )
    return None


def _tile(config: TileConfig, problem: Problem, arch: str) -> str | None:
    row_k = block_k_elems(problem)
    if config.block_k != row_k:
        return f"block_k={config.block_k}: one 128-byte swizzled row of k, {row_k}"
    if config.block_m % TMA_BOX or config.block_n % TMA_BOX:
        return f"block_m, block_n={config.block_m}, {config.block_n}: multiples of {TMA_BOX}"
    return None


def accumulator_budget(config: TileConfig) -> int:
    cap = min(MAX_REGS_PER_THREAD, REGISTER_FILE // config.num_threads)
    return min(ACCUMULATOR_REGISTER_BUDGET, cap - REGISTER_HEADROOM)


def _registers(config: TileConfig, problem: Problem, arch: str) -> str | None:
    regs = accumulator_registers(config)
    budget = accumulator_budget(config)
    if regs > budget:
        return (
            f"block_m={config.block_m}, block_n={config.block_n}, num_warps={config.num_warps}: "
            f"{regs} accumulator registers per consumer thread > {budget}"
        )
    return None


SPACE = Space(
    family="gemm_sm90",
    params=(
        Param("block_m", (64, 128, 192)),
        Param("block_n", (64, 128, 192, 256)),
        Param("block_k", (64, 128)),  # 64 for 16-bit inputs, 128 for e4m3
        Param("num_warps", (8, 16)),
        Param("num_stages", (2, 3, 4, 5)),
    ),
    constraints=(
        Constraint("sm_90a", _arch),
        Constraint("tma_alignment", _tma_alignment),
        Constraint("warpgroups", _warpgroups),
        Constraint("tile", _tile),
        Constraint("shared_memory", smem_within_arch(smem_bytes)),
        Constraint("threads", threads_within_arch),
        Constraint("grid", grid_within_arch(grid)),
        Constraint("registers", _registers),
    ),
)


def default_config(problem: Problem, arch: str) -> TileConfig:
    """128 x 128 (one consumer of two 64-row tiles) with 4 stages; 64 x 64 for thin problems."""
    bk = block_k_elems(problem)
    preferred = [
        TileConfig(block_m=128, block_n=128, block_k=bk, num_warps=8, num_stages=4),
        TileConfig(block_m=64, block_n=64, block_k=bk, num_warps=8, num_stages=4),
    ]
    return SPACE.first_valid(preferred, problem, arch)
