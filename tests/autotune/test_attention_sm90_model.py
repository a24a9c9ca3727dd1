"""The cost model of attention_sm90 (FlashAttention-3's forward on sm_90a): wgmma at the full
rate fed by a TMA producer warpgroup, the softmax's exposure halved by ping-pong, and the tune
job choosing it on sm_90a."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from autotune.cost_model import CostEstimate, Factors, estimate
from autotune.job import TuneRequest, run
from autotune.loop_structure import (
    ATTENTION_EXPOSED_SHARE,
    ATTENTION_PINGPONG_EXPOSED_SHARE,
    structure_of,
)
from autotune.tile_work import tile_work
from templates.registry import get_family
from tessera_core.types import AttentionProblem, TileConfig
from tests.autotune.test_cost_model import FakeResources

ARCH = "sm_90a"
TARGET = AttentionProblem(8, 16, 8192, 8192, 128)  # the fp16 non-causal target
PEAK_TFLOPS = {"fp16": 989.4, "e4m3": 1978.9}


def tile(block_m: int, block_n: int, pingpong: int) -> TileConfig:
    return TileConfig(block_m, block_n, 64, 4 * (1 + block_m // 64), 2, (("pingpong", pingpong),))


FA3_TILE = tile(128, 128, 1)


def model(problem: AttentionProblem, config: TileConfig, family: str = "attention_sm90",
          arch: str = ARCH) -> CostEstimate:  # fmt: skip
    regs = min(255, 65536 // config.num_threads // 8 * 8)
    return estimate(
        problem,
        config,
        FakeResources(registers=regs),
        dynamic_smem_bytes=get_family(family).smem_bytes(problem, config),
        arch=arch,
        family=family,
        factors=Factors(),
    )


def tflops(problem: AttentionProblem, cost: CostEstimate) -> float:
    return problem.flops() / cost.time_ms / 1e9


def test_attention_sm90_is_warp_specialized_and_ping_pong_lowers_the_exposed_share() -> None:
    structure = structure_of("attention_sm90")
    assert structure.wgmma and structure.producer_warps == 4
    assert structure.barriers_per_iteration == 0.0
    assert structure.for_config(tile(128, 128, 0)).exposed_share == ATTENTION_EXPOSED_SHARE
    pingpong = structure.for_config(FA3_TILE).exposed_share
    assert pingpong == ATTENTION_PINGPONG_EXPOSED_SHARE < ATTENTION_EXPOSED_SHARE


def test_attention_sm90_tiles_read_q_and_each_consumers_kv_from_shared_memory() -> None:
    work = tile_work(TARGET, FA3_TILE, family="attention_sm90")
    kv = 2 * 128 * 128 * 2  # a K and a V tile of 128 keys, 16-bit
    assert work.iteration_smem_bytes == kv + 128 * 128 * 2 + 2 * kv  # fill, Q, two consumers
    assert work.iteration_flops == 4 * 128 * 128 * 128
    fp8 = tile_work(dataclasses.replace(TARGET, dtype="e4m3"), FA3_TILE, family="attention_sm90")
    assert fp8.iteration_smem_bytes == work.iteration_smem_bytes / 2
    assert model(TARGET, FA3_TILE).pipe_clocks["tensor"] == 4 * 128 * 128 * 128 / 4096


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_the_model_puts_attention_sm90_between_fa2_and_the_wgmma_peak(
    head_dim: int, causal: bool
) -> None:
    problem = dataclasses.replace(TARGET, head_dim=head_dim, causal=causal)
    hopper = tflops(problem, model(problem, FA3_TILE))
    fa2_tile = get_family("attention_fwd").default_config(problem, "sm_90")
    fa2 = tflops(problem, model(problem, fa2_tile, "attention_fwd", "sm_90"))
    assert 1.5 * fa2 < hopper < PEAK_TFLOPS["fp16"]
    no_pingpong = tflops(problem, model(problem, tile(128, 128, 0)))
    assert no_pingpong < hopper  # ping-pong hides one warpgroup's softmax under the other's GEMMs
    fp8 = dataclasses.replace(problem, dtype="e4m3")
    if head_dim == 128:
        assert hopper < tflops(fp8, model(fp8, FA3_TILE)) < PEAK_TFLOPS["e4m3"]


def test_the_tune_job_picks_attention_sm90_on_sm90a(tmp_path: Path) -> None:
    problem = AttentionProblem(8, 16, 8192, 8192, 128)
    request = TuneRequest(
        problem=problem, arch=ARCH, trials=2, jobs=1, cache_dir=tmp_path, progress=False
    )
    result = run(request)
    assert result.kernel_key == "attention_sm90.fp16.b8.h16.sq8192.skv8192.d128.noncausal.sm_90a"
    assert result.objective_kind == "model"
    winner = TileConfig.from_dict(result.config)
    assert get_family("attention_sm90").space.is_valid(winner, problem, ARCH)
