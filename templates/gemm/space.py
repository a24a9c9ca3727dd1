"""The gemm tile space: parameters, rules, warp layout, tile order, shared memory, defaults."""

from __future__ import annotations

import dataclasses

from tessera_core.hardware import ceil_div
from tessera_core.space import (
    Constraint,
    Param,
    Space,
    grid_within_arch,
    smem_within_arch,
    threads_within_arch,
)
from tessera_core.types import DTYPE_BYTES, GemmProblem, Problem, TileConfig

MMA_M = 16  # rows of one mma.m16n8k16 tile
MMA_N = 8  # columns of one mma accumulator tile
MMA_K = 16  # reduction depth of one mma
WARP_TILE_N_STEP = 16  # ldmatrix.x4.trans loads B for two 8-column tiles at once
ROW_PAD_ELEMS = 8  # 16 bytes of padding per shared-memory row: ldmatrix rows hit distinct banks
# Rough per-thread register budget for the accumulator and one k-step of A/B fragments;
# the rest of the 255 goes to addresses and loop state. Above it ptxas spills.
FRAGMENT_REGISTER_BUDGET = 200
WIDE_TILE_SIDE = 256  # allowed only against a 128 side: 8 warps of 64 x 64
WIDE_TILE_PARTNER = 128
# Grouped tile order (option group_m): tile rows per group; 1 is plain row-major order, the
# order of a config that does not set it.
GROUP_M_CHOICES = (1, 4, 8)
DEFAULT_GROUP_M = 1


def as_problem(problem: Problem) -> GemmProblem:
    """`problem` as this family's GemmProblem; TypeError for another family's."""
    if not isinstance(problem, GemmProblem):
        raise TypeError(f"gemm needs a GemmProblem, got {type(problem).__name__}")
    return problem


def warp_layout(config: TileConfig) -> tuple[int, int] | None:
    """(warps along M, warps along N) tiling the block with the squarest warp tiles.

    None when no arrangement gives warp tiles that are multiples of 16 x 16.
    """
    best: tuple[float, tuple[int, int]] | None = None
    warps_m = 1
    while warps_m <= config.num_warps:
        warps_n = config.num_warps // warps_m
        tile_m, tile_n = config.block_m / warps_m, config.block_n / warps_n
        fits = (
            config.block_m % (warps_m * MMA_M) == 0
            and config.block_n % (warps_n * WARP_TILE_N_STEP) == 0
        )
        if fits:
            skew = max(tile_m, tile_n) / min(tile_m, tile_n)
            if best is None or skew < best[0]:
                best = (skew, (warps_m, warps_n))
        warps_m *= 2
    return None if best is None else best[1]


def smem_row_elems(cols: int) -> int:
    return cols + ROW_PAD_ELEMS


def group_m(config: TileConfig) -> int:
    """Tile rows per group of the block order (1: plain row-major); GROUP_M of the template."""
    return config.option("group_m", DEFAULT_GROUP_M)


def tile_grid(problem: Problem, config: TileConfig) -> tuple[int, int]:
    """(tile rows, tile columns) of C."""
    p = as_problem(problem)
    return ceil_div(p.m, config.block_m), ceil_div(p.n, config.block_n)


def tile_coords(block: int, grid_m: int, grid_n: int, group_rows: int) -> tuple[int, int]:
    """(tile row, tile column) of linear block `block`: the template's grouped_tile, in Python.

    Blocks walk groups of `group_rows` tile rows column by column (Triton's GROUP_SIZE_M order);
    the last group holds the remaining rows.
    """
    blocks_per_group = group_rows * grid_n
    first_m = (block // blocks_per_group) * group_rows
    rows = min(grid_m - first_m, group_rows)
    in_group = block % blocks_per_group
    return first_m + in_group % rows, in_group // rows


def grid(problem: Problem, config: TileConfig) -> tuple[int, int, int]:
    """Launch grid: one block per output tile, in one dimension (the kernel orders the tiles)."""
    grid_m, grid_n = tile_grid(problem, config)
    return (grid_m * grid_n, 1, 1)


def smem_bytes(problem: Problem, config: TileConfig) -> int:
    """Dynamic shared memory: num_stages x (A tile + B tile), each kept as it lies in global
    memory (layout NN: A block_m x block_k, B block_k x block_n; a transposed operand's rows and
    columns swap), rows padded by ROW_PAD_ELEMS."""
    p = as_problem(problem)
    bm, bn, bk = config.block_m, config.block_n, config.block_k
    a_tile = bk * smem_row_elems(bm) if p.layout[0] == "t" else bm * smem_row_elems(bk)
    b_tile = bn * smem_row_elems(bk) if p.layout[1] == "t" else bk * smem_row_elems(bn)
    return config.num_stages * (a_tile + b_tile) * DTYPE_BYTES


def fragment_registers(config: TileConfig) -> int:
    """32-bit registers per thread for the accumulator plus one k-step of A and B fragments."""
    layout = warp_layout(config) or (1, config.num_warps)
    m_tiles = max(1, config.block_m // layout[0] // MMA_M)
    n_tiles = max(1, config.block_n // layout[1] // MMA_N)
    return m_tiles * n_tiles * 4 + m_tiles * 4 + n_tiles * 2


def _block_k(config: TileConfig, problem: Problem, arch: str) -> str | None:
    if config.block_k % MMA_K:
        return f"block_k={config.block_k} must be a multiple of {MMA_K} (mma depth)"
    return None


def _warps_tile_block(config: TileConfig, problem: Problem, arch: str) -> str | None:
    if warp_layout(config) is None:
        return (
            f"num_warps={config.num_warps} cannot tile block_m={config.block_m} x block_n="
            f"{config.block_n} with warp tiles that are multiples of 16 x 16"
        )
    return None


def _wide_tiles(config: TileConfig, problem: Problem, arch: str) -> str | None:
    """A 256-wide side only as 128x256 or 256x128: the narrower 256-wide tiles cost the same
    registers per warp as 128-wide ones and only waste loads on small problems."""
    sides = (config.block_m, config.block_n)
    if WIDE_TILE_SIDE in sides and sorted(sides) != [WIDE_TILE_PARTNER, WIDE_TILE_SIDE]:
        return (
            f"block_m={config.block_m} x block_n={config.block_n}: a {WIDE_TILE_SIDE}-wide "
            f"tile must be {WIDE_TILE_PARTNER}x{WIDE_TILE_SIDE} or "
            f"{WIDE_TILE_SIDE}x{WIDE_TILE_PARTNER}"
        )
    return None


def _group_m_changes_the_order(config: TileConfig, problem: Problem, arch: str) -> str | None:
    """group_m is valid only where it orders the tiles differently from every smaller choice:
    with one tile column any grouping is row-major, and groups taller than the grid are one."""
    rows = group_m(config)
    if rows == 1:
        return None
    grid_m, grid_n = tile_grid(problem, config)
    smaller = max(c for c in GROUP_M_CHOICES if c < rows)
    if grid_n == 1 or smaller >= grid_m:
        return (
            f"group_m={rows} orders the {grid_m} x {grid_n} tiles of {problem.shape_str()} "
            f"exactly as group_m={smaller} does; use group_m={smaller}"
        )
    return None


def _dtype(config: TileConfig, problem: Problem, arch: str) -> str | None:
    dtype = as_problem(problem).dtype
    if dtype not in ("fp16", "bf16"):
        return f"dtype={dtype}: mma.sync m16n8k16 takes fp16 or bf16 (e4m3: gemm_sm90, sm_90a)"
    return None


def _registers(config: TileConfig, problem: Problem, arch: str) -> str | None:
    regs = fragment_registers(config)
    if regs > FRAGMENT_REGISTER_BUDGET:
        return (
            f"block_m={config.block_m}, block_n={config.block_n}, num_warps={config.num_warps}: "
            f"fragments need {regs} registers per thread > {FRAGMENT_REGISTER_BUDGET} "
            "(would spill); use more warps or a smaller block"
        )
    return None


SPACE = Space(
    family="gemm",
    params=(
        Param("block_m", (32, 64, 128, 256)),
        Param("block_n", (32, 64, 128, 256)),
        Param("block_k", (16, 32, 64)),
        Param("num_warps", (2, 4, 8)),
        Param("num_stages", (2, 3, 4)),
        Param("group_m", GROUP_M_CHOICES, default=DEFAULT_GROUP_M),
    ),
    constraints=(
        Constraint("dtype", _dtype),
        Constraint("block_k_multiple_of_16", _block_k),
        Constraint("warps_tile_block", _warps_tile_block),
        Constraint("shared_memory", smem_within_arch(smem_bytes)),
        Constraint("threads", threads_within_arch),
        Constraint("grid", grid_within_arch(grid)),
        Constraint("registers", _registers),
        Constraint("wide_tiles", _wide_tiles),
        Constraint("group_m_distinct", _group_m_changes_the_order),
    ),
)


def default_config(problem: Problem, arch: str) -> TileConfig:
    """A CUTLASS-like 128x128x32, 4 warps of 64x64, 3 stages; 64x64 tiles for thin problems.

    Tiles go in grouped order, 8 tile rows a group where the grid has that many, else fewer.
    """
    p = as_problem(problem)
    tiles = []
    if p.m > 64 and p.n > 64:
        tiles.append(TileConfig(block_m=128, block_n=128, block_k=32, num_warps=4, num_stages=3))
    tiles += [
        TileConfig(block_m=64, block_n=64, block_k=32, num_warps=4, num_stages=3),
        TileConfig(block_m=32, block_n=32, block_k=16, num_warps=2, num_stages=2),
    ]
    preferred = [
        dataclasses.replace(tile, options=(("group_m", rows),))
        for tile in tiles
        for rows in sorted(GROUP_M_CHOICES, reverse=True)
    ]
    return SPACE.first_valid(preferred, problem, arch)
