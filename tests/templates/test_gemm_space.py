"""The gemm space: warp layout, tile order, rules with reasons, exact smem, defaults, params."""

from __future__ import annotations

import ctypes
import dataclasses

import pytest

from generator.render import render
from templates.gemm import space
from templates.gemm.family import FAMILY
from tessera_core.hardware import ARCHS
from tessera_core.types import GemmProblem, TileConfig

BIG = GemmProblem(4096, 4096, 4096)


def _violation(config: TileConfig, arch: str, rule: str) -> str:
    reasons = [r for r in FAMILY.space.violations(config, BIG, arch) if r.startswith(rule)]
    assert reasons, f"{rule} should reject {config}: {FAMILY.space.violations(config, BIG, arch)}"
    return reasons[0]


def test_warp_layout_is_the_squarest_that_tiles_the_block() -> None:
    assert space.warp_layout(TileConfig(128, 128, 32, 4, 3)) == (2, 2)
    assert space.warp_layout(TileConfig(128, 64, 32, 8, 3)) == (4, 2)
    assert space.warp_layout(TileConfig(32, 32, 16, 8, 2)) is None


def test_warps_that_cannot_tile_the_block_are_rejected() -> None:
    reason = _violation(TileConfig(32, 32, 16, 8, 2), "sm_90", "warps_tile_block")
    assert "num_warps=8" in reason and "block_m=32" in reason


def test_accumulators_that_would_spill_are_rejected() -> None:
    reason = _violation(TileConfig(128, 128, 32, 2, 3), "sm_90", "registers")
    assert "num_warps=2" in reason


def test_shared_memory_is_checked_against_the_arch_opt_in_limit() -> None:
    config = TileConfig(128, 128, 64, 4, 4)
    assert FAMILY.space.is_valid(config, BIG, "sm_90")
    reason = _violation(config, "sm_86", "shared_memory")
    assert f"smem_bytes={space.smem_bytes(BIG, config)}" in reason


def test_smem_bytes_counts_padded_a_and_b_tiles_per_stage() -> None:
    config = TileConfig(128, 64, 32, 4, 3)
    a_tile, b_tile = 128 * (32 + 8), 32 * (64 + 8)
    assert space.smem_bytes(BIG, config) == 3 * (a_tile + b_tile) * 2 == 44544


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("shape", [(4096, 4096, 4096), (17, 3000, 5), (1, 1, 1)])
def test_default_config_is_valid_everywhere(arch: str, shape: tuple[int, int, int]) -> None:
    problem = GemmProblem(*shape)
    assert FAMILY.space.violations(FAMILY.default_config(problem, arch), problem, arch) == []


def test_launch_geometry_is_one_block_per_tile_in_one_dimension() -> None:
    geometry = FAMILY.launch_geometry(GemmProblem(300, 130, 7), TileConfig(128, 64, 32, 4, 3))
    assert geometry.grid == (9, 1, 1)
    assert geometry.block == (128, 1, 1)


@pytest.mark.parametrize("group_rows", space.GROUP_M_CHOICES)
@pytest.mark.parametrize("grid_m,grid_n", [(1, 1), (3, 2), (9, 5), (17, 3), (8, 8)])
def test_grouped_order_visits_every_tile_once(group_rows: int, grid_m: int, grid_n: int) -> None:
    coords = [space.tile_coords(b, grid_m, grid_n, group_rows) for b in range(grid_m * grid_n)]
    assert sorted(coords) == [(m, n) for m in range(grid_m) for n in range(grid_n)]


def test_group_of_one_row_is_row_major_order() -> None:
    assert [space.tile_coords(b, 2, 3, 1) for b in range(6)] == [
        (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2),
    ]  # fmt: skip


def test_groups_walk_their_rows_column_by_column_and_the_last_group_is_short() -> None:
    # 5 tile rows in groups of 4: rows 0-3 column by column, then row 4 alone.
    order = [space.tile_coords(b, 5, 2, 4) for b in range(10)]
    assert order == [
        (0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1), (2, 1), (3, 1), (4, 0), (4, 1),
    ]  # fmt: skip


def test_a_config_without_group_m_takes_plain_row_major_order() -> None:
    config = TileConfig(128, 128, 32, 4, 3)
    assert space.group_m(config) == 1
    assert FAMILY.space.is_valid(config, BIG, "sm_90")
    assert "constexpr int GROUP_M = 1;" in render(FAMILY, BIG, config, arch="sm_90").source


def _grouped(config: TileConfig, rows: int) -> TileConfig:
    return dataclasses.replace(config, options=(("group_m", rows),))


@pytest.mark.parametrize(
    "shape,tile,valid",
    [
        ((4096, 4096, 64), (128, 128), {1, 4, 8}),
        ((512, 4096, 64), (128, 128), {1, 4}),  # 4 tile rows: groups of 8 are one group of 4
        ((129, 4096, 64), (128, 128), {1, 4}),
        ((128, 4096, 64), (128, 128), {1}),  # one tile row
        ((4096, 128, 64), (128, 128), {1}),  # one tile column: any grouping is row-major
    ],
)
def test_only_group_sizes_that_change_the_order_are_valid(
    shape: tuple[int, int, int], tile: tuple[int, int], valid: set[int]
) -> None:
    problem = GemmProblem(*shape)
    base = TileConfig(*tile, 32, 4, 3)
    got = {
        g
        for g in space.GROUP_M_CHOICES
        if FAMILY.space.is_valid(_grouped(base, g), problem, "sm_90")
    }
    assert got == valid
    grid_m, grid_n = space.tile_grid(problem, base)
    orders = {
        tuple(space.tile_coords(b, grid_m, grid_n, g) for b in range(grid_m * grid_n)) for g in got
    }
    assert len(orders) == len(got)  # every valid choice is a different order
    if valid != {1, 4, 8}:
        reason = _violation_of(_grouped(base, max(space.GROUP_M_CHOICES)), problem, "group_m")
        assert "use group_m=" in reason


def _violation_of(config: TileConfig, problem: GemmProblem, rule: str) -> str:
    return next(r for r in FAMILY.space.violations(config, problem, "sm_90") if r.startswith(rule))


def test_256_wide_tiles_are_128x256_and_256x128_with_8_warps() -> None:
    for tile in ((128, 256), (256, 128)):
        assert FAMILY.space.is_valid(TileConfig(*tile, 32, 8, 3), BIG, "sm_80")
    assert "wide_tiles" in _violation(TileConfig(256, 64, 32, 4, 3), "sm_90", "wide_tiles")
    assert "registers" in _violation(TileConfig(128, 256, 32, 4, 3), "sm_90", "registers")


@pytest.mark.parametrize(
    "problem",
    [GemmProblem(4096, 4096, 4096), GemmProblem(67, 45, 93, "bf16"), GemmProblem(300, 520, 64)],
    ids=lambda p: p.shape_str(),
)
def test_every_valid_config_renders_a_distinct_kernel(problem: GemmProblem) -> None:
    configs = FAMILY.space.valid_configs(problem, "sm_90")
    sources = {render(FAMILY, problem, c, specialized=True, arch="sm_90").source for c in configs}
    assert len(sources) == len(configs)


def test_default_config_groups_tile_rows_where_the_grid_has_them() -> None:
    assert space.group_m(FAMILY.default_config(BIG, "sm_90")) == 8
    assert space.group_m(FAMILY.default_config(GemmProblem(300, 4096, 64), "sm_90")) == 4
    assert space.group_m(FAMILY.default_config(GemmProblem(100, 100, 64), "sm_90")) == 1


def test_params_layout_and_values() -> None:
    params = FAMILY.make_params(GemmProblem(3, 5, 7), pointers={"a": 16, "b": 32, "c": 48})
    assert (params.a, params.b, params.c, params.m, params.n, params.k) == (16, 32, 48, 3, 5, 7)
    offsets = [getattr(FAMILY.params_type, n).offset for n, _ in FAMILY.params_type._fields_]
    assert offsets == [0, 8, 16, 24, 28, 32]
    assert ctypes.sizeof(FAMILY.params_type) == 40
    with pytest.raises(ValueError, match="attention only"):
        FAMILY.make_params(GemmProblem(3, 5, 7), pointers={"a": 1, "b": 2, "c": 3}, scale=1.0)
