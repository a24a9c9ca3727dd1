"""Qualitative properties of the analytical cost model (no GPU: the model is the objective here)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from autotune.cost_model import Factors, estimate
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


def model(problem=PROBLEM, config=CONFIG, resources=FakeResources(), arch=H100, **kwargs):
    smem = (
        attention_smem(problem, config)
        if isinstance(problem, AttentionProblem)
        else (config.block_m + config.block_n) * config.block_k * 2 * config.num_stages
    )
    kwargs.setdefault("factors", Factors())  # uncalibrated: a stored calibration may change
    return estimate(problem, config, resources, dynamic_smem_bytes=smem, arch=arch, **kwargs)


def test_reference_shape_on_h100_is_above_the_roofline_and_within_a_few_x():
    cost = model()
    assert LOWER_BOUND_MS <= cost.time_ms <= 5 * LOWER_BOUND_MS
    assert cost.bound != "memory"  # ~1000 FLOP per byte
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
    # (block_k=64 would hold 3 blocks a SM instead of 4 by shared memory: not the same test.)
    # Four resident blocks hide a k-step's barrier and loop overhead behind the tensor pipe:
    # shallower k-steps cost no less, and nothing more while the tensor pipe binds.
    k_times = [model(gemm, TileConfig(128, 128, bk, 4, 2)).time_ms for bk in (32, 16)]
    assert k_times == sorted(k_times)


def test_gemm_shared_memory_traffic_follows_the_templates_warp_grid():
    from autotune.tile_work import tile_work
    from templates.gemm.space import warp_layout

    # 8 warps on a tall 128x32 block: the template arranges them 4x2, not the 2x4 a
    # near-square guess would give; the ldmatrix traffic depends on which.
    problem, config = GemmProblem(512, 512, 512), TileConfig(128, 32, 32, 8, 2)
    warps_m, warps_n = warp_layout(config)
    assert (warps_m, warps_n) == (4, 2)
    per_step = (warps_n * 128 + warps_m * 32 + 128 + 32) * 32 * 2
    work = tile_work(problem, config)
    assert work.iteration_smem_bytes == per_step
    assert work.iterations == (512 // 128) * (512 // 32) * (512 // 32)


# --- bottleneck, issue slots, exposed latency, factors ---------------------------------------


def test_an_iteration_costs_its_bottleneck_pipe_not_the_sum():
    # MUFU, FP32 and shared-memory work overlap the tensor pipe: the iteration costs less
    # than the sum of its pipes and at least the largest one.
    cost = model()
    pipes = cost.pipe_clocks
    assert max(pipes.values()) <= cost.iteration_clocks < sum(pipes.values())


def test_more_warps_per_scheduler_hide_more_of_the_other_pipes():
    # Same block; 255 registers hold one block of 4 warps a SM, 64 registers four blocks.
    lonely = model(resources=FakeResources(registers=255))
    crowded = model(resources=FakeResources(registers=64))
    assert crowded.iteration_clocks < lonely.iteration_clocks


def test_sixteen_row_warps_double_shared_memory_traffic_per_mma():
    # The issue's figure: d128, 128x64 tiles; 8 warps of 16 rows read K and V once each per
    # warp: 288 B per HMMA with the fill; 4 warps of 32 rows with Q from smem: 192 B.
    from autotune.tile_work import MMA_FLOPS, tile_work

    problem = AttentionProblem(4, 16, 2048, 2048, 128)

    def bytes_per_mma(config):
        work = tile_work(problem, config)
        return work.iteration_smem_bytes / (work.iteration_flops / MMA_FLOPS)

    assert bytes_per_mma(TileConfig(128, 64, 32, 8, 2)) == 288
    assert bytes_per_mma(TileConfig(128, 64, 32, 4, 2, options=(("q_in_regs", 0),))) == 192
    assert bytes_per_mma(TileConfig(128, 64, 32, 4, 2)) == 160  # Q held in registers


def test_sass_instruction_mix_sets_the_issue_slots():
    # A main loop of 128 HMMA per warp (one 128x64, d64 iteration) plus 2000 other
    # instructions is issue-bound; the same loop with 400 others is not.
    counts = {"HMMA": 128, "LDSM": 32, "MUFU": 66, "BAR": 1}
    lean = model(loop_counts={**counts, "IMAD": 400})
    fat = model(loop_counts={**counts, "IMAD": 2000})
    assert lean.instruction_source == fat.instruction_source == "sass"
    assert fat.bound == "issue" and lean.bound != "issue"
    assert fat.time_ms > lean.time_ms


def test_an_unrolled_sass_loop_counts_per_iteration():
    # ptxas unrolling the loop twice doubles every count: the same per-iteration mix.
    counts = {"HMMA": 128, "LDSM": 32, "MUFU": 66, "FFMA": 70, "BAR": 1, "IMAD": 300}
    once = model(loop_counts=counts)
    twice = model(loop_counts={op: 2 * n for op, n in counts.items()})
    assert twice.time_ms == pytest.approx(once.time_ms)
    assert twice.pipe_clocks == once.pipe_clocks


def test_without_sass_the_analytical_mix_is_close_to_the_real_one():
    # SASS of the 128x64, d64, 4-warp kernel on sm_90: 630 instructions a warp-iteration.
    from autotune.tile_work import tile_work

    work = tile_work(PROBLEM, CONFIG)
    assert work.instruction_source == "analytic"
    assert 0.8 * 630 * 4 <= work.iteration_warp_instructions <= 1.25 * 630 * 4


def test_one_stage_exposes_the_load_latency_two_stages_hide_it():
    # One resident block (8 warps at 255 registers fill the register file): with one stage
    # every KV tile's load waits; with two the previous iteration covers it.
    one = model(config=TileConfig(128, 64, 16, 8, 1), resources=FakeResources(registers=255))
    two = model(config=TileConfig(128, 64, 16, 8, 2), resources=FakeResources(registers=255))
    assert one.active_blocks_per_sm == two.active_blocks_per_sm == 1
    assert one.bound == "latency" and two.bound != "latency"
    assert one.time_ms > 1.2 * two.time_ms


def test_grouped_gemm_order_rereads_less_from_dram():
    from autotune.tile_work import tile_work

    problem = GemmProblem(8192, 8192, 8192)
    rows = tile_work(problem, TileConfig(128, 128, 32, 4, 3))
    grouped = tile_work(problem, TileConfig(128, 128, 32, 4, 3, options=(("group_m", 8),)))
    assert grouped.l2_bytes < rows.l2_bytes


def test_factors_scale_their_terms():
    from autotune.cost_model import Factors

    base = model(factors=Factors())
    slow_tensor = model(factors=Factors(tensor=2.0))
    assert slow_tensor.pipe_clocks["tensor"] == 2 * base.pipe_clocks["tensor"]
    assert slow_tensor.time_ms > base.time_ms
    with pytest.raises(ValueError, match=r"Factors\.smem"):
        Factors(smem=0)
    with pytest.raises(ValueError, match="unknown"):
        Factors.from_dict({"bogus": 1.0})


def test_stored_calibration_is_used(monkeypatch, tmp_path):
    import autotune.cost_model as cost_model
    import tessera_core.hardware as hardware

    path = tmp_path / "calibration.json"
    path.write_text('{"sm_90": {"factors": {"tensor": 3.0}}}')
    monkeypatch.setattr(hardware, "CALIBRATION_PATH", path)
    cost_model.calibrated_factors.cache_clear()
    try:
        assert model(factors=None).time_ms > 1.5 * model().time_ms
    finally:
        cost_model.calibrated_factors.cache_clear()


def test_a_loop_with_a_fraction_of_an_iterations_mmas_is_not_the_main_loop():
    partial = model(loop_counts={"HMMA": 8, "IMAD": 5000})
    assert partial.instruction_source == "analytic"


# -- sm_90a: wgmma fed by a TMA producer warpgroup (autotune.loop_structure) -----------------

SM90_GEMM = GemmProblem(8192, 8192, 8192, dtype="bf16")
SM90_CONFIG = TileConfig(block_m=192, block_n=128, block_k=64, num_warps=16, num_stages=4)


def sm90_model(config=SM90_CONFIG, **kwargs):
    from templates.gemm_sm90.space import smem_bytes

    kwargs.setdefault("factors", Factors())
    return estimate(
        SM90_GEMM,
        config,
        FakeResources(registers=128),
        dynamic_smem_bytes=smem_bytes(SM90_GEMM, config),
        arch="sm_90a",
        **kwargs,
    )


def test_gemm_sm90_issues_wgmma_at_the_full_rate_and_mma_sync_at_two_thirds():
    from autotune.cost_model import tensor_flops_per_clock
    from autotune.loop_structure import MMA_SYNC, WARP_SPECIALIZED, structure_of

    assert structure_of("gemm_sm90") is WARP_SPECIALIZED and structure_of("gemm") is MMA_SYNC
    assert tensor_flops_per_clock("sm_90a", WARP_SPECIALIZED, "bf16") == 4096
    assert tensor_flops_per_clock("sm_90a", MMA_SYNC, "bf16") == pytest.approx(4096 * 2 / 3)
    assert tensor_flops_per_clock("sm_90a", WARP_SPECIALIZED, "e4m3") == 8192
    cost = sm90_model(family="gemm_sm90")
    assert cost.pipe_clocks["tensor"] == 2 * 192 * 128 * 64 / 4096


def test_fp8_inputs_halve_the_tensor_pipe_and_the_shared_memory_bytes():
    bf16 = sm90_model(family="gemm_sm90")
    fp8 = sm90_model(family="gemm_sm90", input_dtype="e4m3")
    assert fp8.pipe_clocks["tensor"] == bf16.pipe_clocks["tensor"] / 2
    assert fp8.pipe_clocks["smem"] == bf16.pipe_clocks["smem"] / 2
    assert fp8.time_ms < bf16.time_ms


def test_gemm_sm90_shared_memory_is_the_tma_fill_plus_each_wgmma_row_tiles_operands():
    from autotune.tile_work import tile_work

    work = tile_work(SM90_GEMM, SM90_CONFIG, family="gemm_sm90")
    bm, bn, bk = 192, 128, 64
    fill = (bm + bn) * bk * 2
    reads = (bm + (bm // 64) * bn) * bk * 2  # three 64-row wgmma tiles, each reads all of B
    assert work.iteration_smem_bytes == fill + reads


def test_gemm_sm90_instructions_are_the_consumers_wgmmas_and_the_producers_tma():
    from autotune.tile_work import TMA_PRODUCER_INSTRUCTIONS, WGMMA_LOOP_INSTRUCTIONS, tile_work

    assert (WGMMA_LOOP_INSTRUCTIONS, TMA_PRODUCER_INSTRUCTIONS) == (12, 12)
    work = tile_work(SM90_GEMM, SM90_CONFIG, family="gemm_sm90")
    consumers, wgmmas = 3, 1 * (64 // 16)  # 64 rows each, k16 steps over block_k=64
    assert work.iteration_warp_instructions == 4 * consumers * (wgmmas + 12) + 4 * 12


def test_a_warp_specialized_loop_waits_at_no_barrier_and_exposes_a_tenth_of_the_rest():
    from autotune.cost_model import _busy_clocks
    from autotune.loop_structure import WARP_SPECIALIZED, WARP_SPECIALIZED_EXPOSED_SHARE

    assert WARP_SPECIALIZED_EXPOSED_SHARE == 0.1
    assert WARP_SPECIALIZED.barriers_per_iteration == 0.0
    assert WARP_SPECIALIZED.consumer_warps(16) == 12  # one producer warpgroup only loads
    pipes = {"tensor": 100.0, "smem": 60.0, "mufu": 0.0, "fp32": 0.0, "issue": 10.0}
    busy, bound = _busy_clocks(pipes, 4, "sm_90a", Factors(), WARP_SPECIALIZED)
    assert bound == "tensor" and busy == pytest.approx(100.0 + 60.0 * 0.1)
    mma_sync, _ = _busy_clocks(pipes, 4, "sm_90a", Factors())
    assert mma_sync == pytest.approx(100.0 + 60.0 * 0.9)  # sm_90a's mma.sync share is sm_90's


def test_the_hopper_gemm_models_faster_than_the_same_tiles_on_mma_sync():
    hopper = sm90_model(family="gemm_sm90")
    assert hopper.time_ms < sm90_model(family=None).time_ms
    assert 0.6 < hopper.efficiency <= 1.0  # within the 989 TFLOP/s peak
