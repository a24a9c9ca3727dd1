"""Qualitative properties of the analytical cost model (no GPU: the model is the objective here)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from autotune.cost_model import estimate
from tessera_core.errors import OutOfResourcesError
from tessera_core.types import AttentionProblem, GemmProblem, TileConfig

H100 = "sm_90"
PROBLEM = AttentionProblem(batch=8, heads=16, seq_q=2048, seq_kv=2048, head_dim=64)
CONFIG = TileConfig(block_m=128, block_n=64, block_k=32, num_warps=4, num_stages=2)
LOWER_BOUND_MS = 0.139  # hardware.md: 137.4 GFLOP at 989.4 TFLOP/s


@dataclass(frozen=True)
class FakeResources:
    registers: int = 128
    static_smem_bytes: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0


def attention_smem(problem: AttentionProblem, config: TileConfig) -> int:
    row = (problem.head_dim + 8) * 2
    return config.block_m * row + config.num_stages * 2 * config.block_n * row


def model(problem=PROBLEM, config=CONFIG, resources=FakeResources(), arch=H100):
    smem = (
        attention_smem(problem, config)
        if isinstance(problem, AttentionProblem)
        else (config.block_m + config.block_n) * config.block_k * 2 * config.num_stages
    )
    return estimate(problem, config, resources, dynamic_smem_bytes=smem, arch=arch)


def test_reference_shape_on_h100_is_above_the_roofline_and_within_a_few_x():
    cost = model()
    assert LOWER_BOUND_MS <= cost.time_ms <= 5 * LOWER_BOUND_MS
    assert cost.bound == "compute"  # ~1000 FLOP per byte
    assert cost.time_ms >= max(cost.compute_ms, cost.memory_ms)
    assert 0 < cost.efficiency <= 2 / 3  # mma.sync ceiling on sm_90
    assert cost.wasted_fraction == pytest.approx(0.0)
    assert cost.waves == -(-cost.blocks // (132 * cost.active_blocks_per_sm))


def test_more_spill_is_never_faster():
    times = [
        model(resources=FakeResources(spill_store_bytes=s, spill_load_bytes=s)).time_ms
        for s in (0, 4, 32, 256)
    ]
    assert times == sorted(times) and times[0] < times[-1]


def test_more_registers_never_faster():
    # Fewer resident blocks hide less latency; the work is the same.
    times = [model(resources=FakeResources(registers=r)).time_ms for r in (64, 128, 168, 255)]
    assert times == sorted(times) and times[0] < times[-1]


def test_a_grid_that_leaves_most_sms_idle_wastes_them():
    # 66 blocks leave half the 132 SMs idle; 132 blocks fill one wave. Same config.
    half = model(AttentionProblem(1, 11, 768, 768, 64), CONFIG)  # 11 heads x 6 tiles = 66
    full = model(AttentionProblem(1, 22, 768, 768, 64), CONFIG)  # 132 blocks
    assert half.blocks == 66 and full.blocks == 132
    assert half.efficiency < 0.6 * full.efficiency


def test_filling_the_last_wave_pays():
    # 133 blocks need a second round on one SM: slower per FLOP than 132.
    one_more = model(AttentionProblem(1, 133, 128, 2048, 64), CONFIG)
    exact = model(AttentionProblem(1, 132, 128, 2048, 64), CONFIG)
    assert one_more.time_ms > exact.time_ms * 1.2


def test_causal_is_about_half_of_non_causal():
    causal = model(AttentionProblem(8, 16, 2048, 2048, 64, causal=True))
    ratio = causal.time_ms / model().time_ms
    assert 0.45 <= ratio <= 0.7
    # Diagonal tiles run in full: some executed work is masked out.
    assert causal.wasted_fraction > 0


def test_ragged_last_tile_runs_in_full():
    ragged = model(AttentionProblem(8, 16, 2049, 2049, 64))
    assert ragged.wasted_fraction > 0
    assert ragged.time_ms >= model().time_ms


def test_gemm_small_tiles_move_more_bytes():
    problem = GemmProblem(4096, 4096, 4096)
    big = model(problem, TileConfig(128, 128, 32, 8, 3))
    small = model(problem, TileConfig(32, 32, 32, 1, 3))
    assert small.memory_ms > big.memory_ms
    assert small.time_ms > big.time_ms


def test_a_block_over_the_smem_limit_raises():
    huge = TileConfig(block_m=128, block_n=128, block_k=64, num_warps=4, num_stages=8)
    with pytest.raises(OutOfResourcesError):
        model(PROBLEM, huge)


def test_breakdown_is_a_dict_for_explanations():
    d = model().to_dict()
    for name in ("time_ms", "compute_ms", "memory_ms", "waves", "occupancy", "efficiency"):
        assert name in d


def test_few_rows_a_warp_is_bound_by_shared_memory():
    # Every warp re-reads each K/V tile through ldmatrix: 16 rows a warp moves twice the
    # shared-memory bytes per FLOP of 32 rows a warp, and on sm_90 that binds before the MMAs.
    thin = model(config=TileConfig(block_m=64, block_n=64, block_k=32, num_warps=4, num_stages=2))
    wide = model(config=TileConfig(block_m=128, block_n=64, block_k=32, num_warps=4, num_stages=2))
    assert thin.time_ms > 1.2 * wide.time_ms


def test_more_main_loop_iterations_for_the_same_work_cost_more():
    # Same occupancy (fake resources, 1 stage so shared memory does not limit): halving the
    # KV tile doubles the iterations, each paying barriers and the softmax's FP32 work.
    kv_times = [
        model(config=TileConfig(128, block_n, 32, 4, 1)).time_ms for block_n in (128, 64, 32)
    ]
    assert kv_times == sorted(kv_times) and kv_times[0] < kv_times[-1]
    gemm = GemmProblem(4096, 4096, 4096)
    k_times = [model(gemm, TileConfig(128, 128, bk, 4, 2)).time_ms for bk in (64, 32, 16)]
    assert k_times == sorted(k_times) and k_times[0] < k_times[-1]


def test_gemm_shared_memory_traffic_follows_the_templates_warp_grid():
    from autotune.cost_model import _gemm_work
    from templates.gemm.space import warp_layout

    # 8 warps on a tall 128x32 block: the template arranges them 4x2, not the 2x4 a
    # near-square guess would give; the ldmatrix traffic depends on which.
    problem, config = GemmProblem(512, 512, 512), TileConfig(128, 32, 32, 8, 2)
    warps_m, warps_n = warp_layout(config)
    assert (warps_m, warps_n) == (4, 2)
    per_step = (warps_n * 128 + warps_m * 32 + 128 + 32) * 32 * 2
    tiles = (512 // 128) * (512 // 32) * (512 // 32)
    assert _gemm_work(problem, config).smem_bytes == tiles * per_step
