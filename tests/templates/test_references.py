"""The NumPy references against naive float64 formulas; attention's stays blocked in memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from templates.attention import reference
from templates.attention.reference import attention_reference
from templates.gemm.reference import gemm_reference


def _naive_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    seq_q, seq_kv = q.shape[-2], k.shape[-2]
    scores = q @ np.swapaxes(k, -1, -2) * scale
    if causal:
        above = np.arange(seq_kv)[None, :] > np.arange(seq_q)[:, None] + seq_kv - seq_q
        scores = np.where(above, -np.inf, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
        lse = np.log(np.exp(scores).sum(axis=-1))
        o = weights / weights.sum(axis=-1, keepdims=True) @ v
    return np.nan_to_num(o, nan=0.0), lse


@pytest.mark.parametrize(
    "seq_q,seq_kv,causal", [(40, 40, False), (37, 53, True), (53, 37, True), (1, 70, True)]
)
def test_attention_reference_matches_the_naive_formula(
    seq_q: int, seq_kv: int, causal: bool
) -> None:
    rng = np.random.default_rng(seq_q + seq_kv)
    q = rng.standard_normal((2, 3, seq_q, 32))
    k, v = (rng.standard_normal((2, 3, seq_kv, 32)) for _ in range(2))

    o, lse = attention_reference(q, k, v, causal=causal, accum_dtype=np.float64, block_kv=16)
    want_o, want_lse = _naive_attention(q, k, v, causal, 1 / np.sqrt(32))

    np.testing.assert_allclose(o, want_o, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.isneginf(lse), np.isneginf(want_lse))
    seen = np.isfinite(want_lse)
    np.testing.assert_allclose(lse[seen], want_lse[seen], rtol=1e-12)
    if seq_q > seq_kv and causal:
        assert (~seen).any() and np.all(o[~seen] == 0.0)  # rows that see no key


def test_attention_reference_accumulates_in_the_requested_dtype() -> None:
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 1, 20, 16)).astype(np.float16) for _ in range(3))
    o32, lse32 = attention_reference(q, k, v, scale=0.2)
    o64, _ = attention_reference(q, k, v, scale=0.2, accum_dtype=np.float64)
    assert o32.dtype == lse32.dtype == np.float32 and o64.dtype == np.float64
    want, _ = _naive_attention(*(x.astype(np.float64) for x in (q, k, v)), False, 0.2)
    np.testing.assert_allclose(o32, want, rtol=1e-5, atol=1e-5)


def test_attention_reference_never_holds_the_full_score_matrix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The score block is capped in bytes; shrink the cap so a small problem exceeds it.
    monkeypatch.setattr(reference, "SCORE_BLOCK_BYTES", 1024 * 1024)
    rng = np.random.default_rng(2)
    seq, head_dim = 2048, 8
    q, k, v = (rng.standard_normal((1, 2, seq, head_dim)).astype(np.float32) for _ in range(3))
    full_scores_bytes = 2 * seq * seq * 4
    tracemalloc.start()
    try:
        attention_reference(q, k, v, causal=True)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < full_scores_bytes / 4


def test_gemm_reference_matches_the_naive_formula_over_k_blocks() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((13, 37)), rng.standard_normal((37, 11))
    want = np.array(
        [[sum(a[i, p] * b[p, j] for p in range(37)) for j in range(11)] for i in range(13)]
    )
    np.testing.assert_allclose(
        gemm_reference(a, b, accum_dtype=np.float64, block_k=8), want, rtol=1e-12
    )
    with pytest.raises(ValueError, match="matrix product"):
        gemm_reference(a, a)
