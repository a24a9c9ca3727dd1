"""The decode reference against the forward attention oracle on gathered, head-expanded caches,
and against brute-force window, softcap and append semantics."""

from __future__ import annotations

import numpy as np
import pytest
from decode_runs import DecodeCase, make_tensors

from templates.attention.reference import attention_reference
from templates.attention_decode.reference import (
    append_kv,
    attention_decode_reference,
    gather_kv,
    visible,
)


def _dense(case: DecodeCase, seed: int) -> tuple[dict, list[np.ndarray], list[np.ndarray]]:
    """Inputs and, per batch entry, its keys and values after the append, gathered by hand."""
    tensors = make_tensors(case, seed)
    k_cache, v_cache = np.array(tensors["k_cache"]), np.array(tensors["v_cache"])
    table = tensors["block_table"]
    keys, values = [], []
    for b, length in enumerate(case.cache_seqlens):
        rows_k, rows_v = [], []
        for j in range(length + case.seq_new):
            if j >= length:
                rows_k.append(tensors["k"][b, j - length])  # type: ignore[index]
                rows_v.append(tensors["v"][b, j - length])  # type: ignore[index]
            elif table is None:
                rows_k.append(k_cache[b, j])
                rows_v.append(v_cache[b, j])
            else:
                page = table[b, j // case.page_size]
                rows_k.append(k_cache[page, j % case.page_size])
                rows_v.append(v_cache[page, j % case.page_size])
        keys.append(np.stack(rows_k).astype(np.float64))
        values.append(np.stack(rows_v).astype(np.float64))
    return tensors, keys, values


CASES = [
    DecodeCase(heads_q=4, heads_kv=2, head_dim=32, cache_seqlens=(5, 40), seq_new=2, page_size=16),
    DecodeCase(heads_q=3, heads_kv=1, head_dim=16, cache_seqlens=(9, 1, 30), seq_q=3, causal=True),
    DecodeCase(
        heads_q=2,
        heads_kv=2,
        head_dim=16,
        cache_seqlens=(70,),
        seq_q=4,
        seq_new=4,
        page_size=64,
        causal=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.label())
def test_matches_forward_attention_on_gathered_caches(case: DecodeCase) -> None:
    tensors, keys, values = _dense(case, seed=3)
    o, lse = attention_decode_reference(
        tensors["q"],  # type: ignore[arg-type]
        np.array(tensors["k_cache"]),
        np.array(tensors["v_cache"]),
        cache_seqlens=np.asarray(case.cache_seqlens),
        k=tensors["k"],
        v=tensors["v"],
        block_table=tensors["block_table"],
        causal=case.causal,
    )
    group = case.heads_q // case.heads_kv
    for b in range(case.batch):
        q = np.swapaxes(tensors["q"][b].astype(np.float64), 0, 1)  # type: ignore[union-attr]
        k = np.repeat(np.swapaxes(keys[b], 0, 1), group, axis=0)
        v = np.repeat(np.swapaxes(values[b], 0, 1), group, axis=0)
        want_o, want_lse = attention_reference(q, k, v, causal=case.causal, accum_dtype=np.float64)
        np.testing.assert_allclose(np.swapaxes(o[b], 0, 1), want_o, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(lse[b], want_lse, rtol=1e-12, atol=1e-12)


ALIBI_CASES = [
    DecodeCase(heads_q=4, heads_kv=2, head_dim=32, cache_seqlens=(5, 40), seq_new=2, page_size=16,
               alibi="heads"),
    DecodeCase(heads_q=3, heads_kv=1, head_dim=16, cache_seqlens=(9, 1, 30), seq_q=3, causal=True,
               window_size=(6, 1), softcap=2.0, alibi="batch_heads"),
]  # fmt: skip


@pytest.mark.parametrize("case", ALIBI_CASES, ids=lambda c: c.label())
def test_alibi_matches_forward_attention_with_each_sequences_own_length(case: DecodeCase) -> None:
    # The forward oracle run per sequence on its own gathered keys: the ALiBi distance is
    # measured from that sequence's diagonal (cache_seqlens[b] + seq_new - seq_q), as FA2's.
    tensors, keys, values = _dense(case, seed=4)
    slopes = tensors["alibi_slopes"]
    assert slopes is not None
    o, lse = attention_decode_reference(
        tensors["q"],  # type: ignore[arg-type]
        np.array(tensors["k_cache"]),
        np.array(tensors["v_cache"]),
        cache_seqlens=np.asarray(case.cache_seqlens),
        k=tensors["k"],
        v=tensors["v"],
        block_table=tensors["block_table"],
        causal=case.causal,
        window_size=case.window_size,
        softcap=case.softcap,
        alibi_slopes=slopes,
    )
    group = case.heads_q // case.heads_kv
    for b in range(case.batch):
        q = np.swapaxes(tensors["q"][b].astype(np.float64), 0, 1)  # type: ignore[union-attr]
        k = np.repeat(np.swapaxes(keys[b], 0, 1), group, axis=0)
        v = np.repeat(np.swapaxes(values[b], 0, 1), group, axis=0)
        want_o, want_lse = attention_reference(
            q, k, v, causal=case.causal, accum_dtype=np.float64, window_size=case.window_size,
            softcap=case.softcap, alibi_slopes=slopes if slopes.ndim == 1 else slopes[b],
        )  # fmt: skip
        np.testing.assert_allclose(np.swapaxes(o[b], 0, 1), want_o, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(lse[b], want_lse, rtol=1e-12, atol=1e-12)


def test_alibi_bias_is_minus_slope_times_distance_from_the_diagonal() -> None:
    # One query, 4 keys, cache length 4: the diagonal is key 3; head 1's slope is 0.5.
    q = np.zeros((1, 1, 2, 16))
    cache = np.zeros((1, 4, 1, 16))
    _, lse = attention_decode_reference(
        q, cache, cache.copy(), cache_seqlens=np.array([4]), alibi_slopes=np.array([0.0, 0.5])
    )
    np.testing.assert_allclose(lse[0, 0, 0], np.log(4.0), rtol=1e-12)
    np.testing.assert_allclose(lse[0, 1, 0], np.log(np.exp(-0.5 * np.arange(4)).sum()), rtol=1e-12)


def test_append_writes_new_tokens_at_each_sequence_end_through_the_block_table() -> None:
    case = DecodeCase(
        heads_q=2, heads_kv=2, head_dim=16, cache_seqlens=(15, 3), seq_new=3, page_size=16
    )
    tensors = make_tensors(case, seed=5)
    k_cache, v_cache = np.array(tensors["k_cache"]), np.array(tensors["v_cache"])
    before = k_cache.copy()
    lengths = np.asarray(case.cache_seqlens)
    k_new, v_new = tensors["k"], tensors["v"]
    assert k_new is not None and v_new is not None
    append_kv(k_cache, v_cache, k_new, v_new, lengths, tensors["block_table"])
    table = tensors["block_table"]
    assert table is not None
    # Batch 0: keys 15, 16, 17 straddle a page boundary (page 0 row 15, page 1 rows 0, 1).
    assert np.array_equal(k_cache[table[0, 0], 15], tensors["k"][0, 0])  # type: ignore[index]
    assert np.array_equal(k_cache[table[0, 1], 1], tensors["k"][0, 2])  # type: ignore[index]
    gathered = gather_kv(v_cache, 6, 1, table)
    assert np.array_equal(gathered[3:], tensors["v"][1])  # type: ignore[index]
    changed = np.argwhere((k_cache != before).any(axis=(2, 3)))
    assert len(changed) == 6  # exactly the 2 x 3 new rows


def test_window_mask_is_bottom_right_aligned() -> None:
    # 2 queries, 6 keys: diagonal of row 0 is key 4, of row 1 key 5.
    mask = visible(2, 6, (1, 0))
    assert mask.tolist() == [
        [False, False, False, True, True, False],
        [False, False, False, False, True, True],
    ]
    assert visible(2, 6, (-1, -1)).all()
    assert visible(3, 1, (-1, 0)).tolist() == [[False], [False], [True]]


def test_softcap_caps_scaled_scores_with_tanh() -> None:
    rng = np.random.default_rng(9)
    q = rng.standard_normal((1, 1, 1, 16)) * 8
    k_cache = rng.standard_normal((1, 10, 1, 16)) * 8
    v_cache = rng.standard_normal((1, 10, 1, 16))
    o, lse = attention_decode_reference(
        q, k_cache, v_cache, cache_seqlens=np.array([10]), softcap=5.0, scale=0.5
    )
    scores = 5.0 * np.tanh((q[0, 0, 0] @ k_cache[0, :, 0].T) * 0.5 / 5.0)
    weights = np.exp(scores - scores.max())
    np.testing.assert_allclose(o[0, 0, 0], weights @ v_cache[0, :, 0] / weights.sum(), rtol=1e-12)
    np.testing.assert_allclose(lse[0, 0, 0], np.log(np.exp(scores).sum()), rtol=1e-12)


def test_rows_that_see_no_key_give_zero_and_minus_inf() -> None:
    rng = np.random.default_rng(2)
    q = rng.standard_normal((1, 3, 1, 16))
    cache = rng.standard_normal((1, 4, 1, 16))
    o, lse = attention_decode_reference(
        q, cache, cache.copy(), cache_seqlens=np.array([1]), causal=True
    )
    assert np.all(o[0, :2] == 0.0) and np.all(np.isneginf(lse[0, 0, :2]))
    assert np.isfinite(lse[0, 0, 2])
