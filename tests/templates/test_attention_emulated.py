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

CASES = [
    # (batch, heads, seq_q, seq_kv, head_dim, dtype, causal, config, specialized)
    (2, 2, 37, 53, 64, "fp16", False, TileConfig(64, 32, 32, 4, 2), False),
    (1, 2, 53, 37, 64, "fp16", True, TileConfig(32, 32, 16, 2, 1), False),
    (1, 1, 100, 100, 128, "bf16", True, TileConfig(64, 64, 32, 4, 3), True),
    (1, 1, 130, 77, 64, "bf16", False, TileConfig(128, 64, 16, 4, 2), False),
    (1, 1, 33, 200, 128, "fp16", True, TileConfig(128, 64, 32, 8, 2), True),
    (1, 1, 5, 9, 32, "fp16", True, TileConfig(32, 32, 32, 2, 3), False),
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
    config = TileConfig(32, 32, 32, 2, 2)
    rng = np.random.default_rng(7)
    q, k, v = (random(rng, (1, 1, 40, 64), "fp16") for _ in range(3))

    o, lse = run_attention_emulated(problem, config, q, k, v, specialized=False, scale=0.3)
    want_o, want_lse = attention_reference(q, k, v, causal=True, scale=0.3, accum_dtype=np.float64)

    assert rel_error(o, want_o) < REL_TOLERANCE["fp16"]
    assert np.max(np.abs(lse - want_lse)) < LSE_ABS_TOLERANCE
