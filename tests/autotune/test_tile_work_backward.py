"""The cost model's work of the attention backward: visible (query tile, KV tile) pairs, the two
dQ modes, and a model estimate for every valid configuration."""

from __future__ import annotations

import pytest

from autotune.cost_model import estimate
from autotune.tile_work import tile_work
from generator.resources import Resources
from templates.attention_bwd import space
from tessera_core.hardware import ceil_div
from tessera_core.types import AttentionBackwardProblem

ARCH = "sm_90"


def _visible_pairs(problem: AttentionBackwardProblem, bm: int, bn: int) -> int:
    """Brute force: (query tile, KV tile) pairs with at least one unmasked score."""
    offset = problem.seq_kv - problem.seq_q
    pairs = 0
    for i in range(ceil_div(problem.seq_q, bm)):
        for j in range(ceil_div(problem.seq_kv, bn)):
            rows = range(i * bm, min((i + 1) * bm, problem.seq_q))
            keys = range(j * bn, min((j + 1) * bn, problem.seq_kv))
            if not problem.causal or any(k <= r + offset for r in rows for k in keys):
                pairs += 1
    return pairs


@pytest.mark.parametrize(("seq_q", "seq_kv"), [(65, 97), (97, 65), (128, 128)])
@pytest.mark.parametrize("causal", [False, True])
def test_iterations_count_the_visible_tile_pairs(seq_q: int, seq_kv: int, causal: bool) -> None:
    problem = AttentionBackwardProblem(2, 3, seq_q, seq_kv, 64, causal=causal)
    atomic, det = space.tile(64, 32, 2, 2, 0), space.tile(64, 32, 2, 2, 1)
    pairs = 2 * 3 * _visible_pairs(problem, 64, 32)
    assert tile_work(problem, atomic).iterations == pairs
    assert tile_work(problem, det).iterations == 2 * pairs  # KV blocks, then query blocks
    assert tile_work(problem, atomic).blocks == 6 * ceil_div(seq_kv, 32)
    assert tile_work(problem, det).blocks == 6 * (ceil_div(seq_kv, 32) + ceil_div(seq_q, 64))
    # Five bm x bn x d products per pair, as FlashAttention-2 counts the backward (2.5x fwd).
    assert tile_work(problem, atomic).executed_flops == pairs * 5 * 2 * 64 * 32 * 64


def test_every_valid_configuration_gets_a_finite_positive_estimate() -> None:
    problem = AttentionBackwardProblem(8, 16, 2048, 2048, 64, causal=True)
    resources = Resources(
        registers=200, static_smem_bytes=0, spill_store_bytes=0, spill_load_bytes=0, stack_bytes=0
    )
    for config in space.SPACE.valid_configs(problem, ARCH):
        cost = estimate(
            problem,
            config,
            resources,
            dynamic_smem_bytes=space.smem_bytes(problem, config),
            arch=ARCH,
        )
        assert 0 < cost.time_ms < float("inf"), config
        assert cost.wasted_fraction < 0.5, config
