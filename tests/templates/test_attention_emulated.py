"""The attention template run on the CPU through the host emulator, against float64 NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_runs import (
    LSE_ABS_TOLERANCE,
    REL_TOLERANCE,
    random,
    rel_error,
    run_attention_emulated,
)

from templates.attention.reference import attention_reference
from tessera_core.types import AttentionProblem, TileConfig


def tile(block_m: int, block_n: int, num_warps: int, num_stages: int, q_in_regs: int) -> TileConfig:
    return TileConfig(
        block_m, block_n, 16, num_warps, num_stages, options=(("q_in_regs", q_in_regs),)
    )


CASES = [
    # (batch, heads, seq_q, seq_kv, head_dim, dtype, causal, config, specialized)
    (2, 2, 37, 53, 64, "fp16", False, tile(64, 32, 4, 2, 1), False),
    (1, 2, 53, 37, 64, "fp16", True, tile(32, 32, 2, 1, 1), False),
    (1, 2, 53, 37, 64, "fp16", True, tile(32, 32, 2, 1, 0), False),
    (1, 1, 100, 100, 128, "bf16", True, tile(64, 64, 4, 3, 1), True),
    (1, 1, 130, 77, 64, "bf16", False, tile(128, 64, 4, 2, 1), False),
    (1, 1, 130, 77, 64, "bf16", False, tile(128, 128, 4, 3, 0), False),
    (1, 1, 33, 200, 128, "fp16", True, tile(128, 64, 8, 2, 1), True),
    (1, 1, 150, 150, 128, "fp16", True, tile(128, 64, 4, 3, 0), False),
    (1, 1, 5, 9, 32, "fp16", True, tile(32, 32, 2, 3, 0), False),
    # Head dims whose rows are not a divisor of the block's threads: 6, 10, 12, 14 chunks per
    # row, so the last threads of every copy pass sit out and the last pass is partial.
    (1, 2, 70, 90, 48, "fp16", True, tile(64, 64, 2, 2, 1), False),
    (1, 1, 45, 130, 80, "bf16", False, tile(64, 32, 4, 3, 0), True),
    (1, 1, 100, 66, 96, "fp16", False, tile(32, 64, 2, 1, 1), False),
    (1, 1, 77, 77, 112, "bf16", True, tile(128, 32, 8, 2, 0), False),
]


@pytest.mark.parametrize(
    "batch,heads,seq_q,seq_kv,head_dim,dtype,causal,config,specialized",
    CASES,
    ids=[f"{c[2]}x{c[3]}x{c[4]}-{c[5]}-{'causal' if c[6] else 'full'}-{c[7]}" for c in CASES],
)
def test_emulated_attention_matches_float64_reference(
    batch: int,
    heads: int,
    seq_q: int,
    seq_kv: int,
    head_dim: int,
    dtype: str,
    causal: bool,
    config: TileConfig,
    specialized: bool,
) -> None:
    problem = AttentionProblem(batch, heads, seq_q, seq_kv, head_dim, dtype=dtype, causal=causal)  # type: ignore[arg-type]
    rng = np.random.default_rng(seq_q * 1000 + seq_kv)
    q = random(rng, (batch, heads, seq_q, head_dim), dtype)
    k = random(rng, (batch, heads, seq_kv, head_dim), dtype)
    v = random(rng, (batch, heads, seq_kv, head_dim), dtype)

    o, lse = run_attention_emulated(problem, config, q, k, v, specialized=specialized)
    want_o, want_lse = attention_reference(q, k, v, causal=causal, accum_dtype=np.float64)

    assert rel_error(o, want_o) < REL_TOLERANCE[dtype]
    seen = np.isfinite(want_lse)
    np.testing.assert_array_equal(np.isneginf(lse), ~seen)  # rows that see no key: -inf
    assert np.max(np.abs(lse[seen] - want_lse[seen])) < LSE_ABS_TOLERANCE


def test_emulated_attention_honours_the_softmax_scale() -> None:
    problem = AttentionProblem(1, 1, 40, 40, 64, causal=True)
    config = tile(32, 32, 2, 2, 0)
    rng = np.random.default_rng(7)
    q, k, v = (random(rng, (1, 1, 40, 64), "fp16") for _ in range(3))

    o, lse = run_attention_emulated(problem, config, q, k, v, specialized=False, scale=0.3)
    want_o, want_lse = attention_reference(q, k, v, causal=True, scale=0.3, accum_dtype=np.float64)

    assert rel_error(o, want_o) < REL_TOLERANCE["fp16"]
    assert np.max(np.abs(lse - want_lse)) < LSE_ABS_TOLERANCE
