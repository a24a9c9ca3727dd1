"""The gemm space: warp layout, rules with reasons, exact smem, defaults, params."""

from __future__ import annotations

import ctypes

import pytest

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


def test_launch_geometry_tiles_columns_then_rows() -> None:
    geometry = FAMILY.launch_geometry(GemmProblem(300, 130, 7), TileConfig(128, 64, 32, 4, 3))
    assert geometry.grid == (3, 3, 1)
    assert geometry.block == (128, 1, 1)


def test_params_layout_and_values() -> None:
    params = FAMILY.make_params(GemmProblem(3, 5, 7), pointers={"a": 16, "b": 32, "c": 48})
    assert (params.a, params.b, params.c, params.m, params.n, params.k) == (16, 32, 48, 3, 5, 7)
    offsets = [getattr(FAMILY.params_type, n).offset for n, _ in FAMILY.params_type._fields_]
    assert offsets == [0, 8, 16, 24, 28, 32]
    assert ctypes.sizeof(FAMILY.params_type) == 40
    with pytest.raises(ValueError, match="attention only"):
        FAMILY.make_params(GemmProblem(3, 5, 7), pointers={"a": 1, "b": 2, "c": 3}, scale=1.0)
