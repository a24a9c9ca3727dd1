"""NumPy decoding against a (paged) KV cache as flash_attn_with_kvcache does: tier 1 and oracle.

Conventions: q [batch, seq_q, heads_q, d]; a paged cache [num_pages, page_size, heads_kv, d]
with block_table [batch, max_pages] (key j of batch b at page block_table[b, j // page_size],
row j % page_size) or a contiguous one [batch, capacity, heads_kv, d] (block_table None);
cache_seqlens [batch]; new keys k, v [batch, seq_new, heads_kv, d] are written into the cache
at rows cache_seqlens[b] .. + seq_new before attending, so batch b attends to seqlen_k =
cache_seqlens[b] + seq_new keys. Query head h reads KV head h // (heads_q // heads_kv).
Masks are bottom-right aligned (row s's diagonal is key s + seqlen_k - seq_q); window_size =
(left, right), -1 unbounded; causal means right = 0. softcap > 0 replaces each scaled score x
by softcap * tanh(x / softcap). ALiBi slopes [heads_q] or [batch, heads_q] add
-slope * |s + seqlen_k - seq_q - j| to the (capped) score of row s and key j, with batch b's
own seqlen_k. A row that sees no key gets O = 0 and LSE = -inf.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike, NDArray

from templates.attention.family import default_scale


def cache_rows(
    cache_seqlen: int, count: int, batch: int, block_table: NDArray | None, page_size: int
) -> tuple[NDArray, NDArray]:
    """(page or batch index, row) of keys cache_seqlen - count .. cache_seqlen - 1 of `batch`.

    Without a block table the 'page' is the batch entry and the row the key's position.
    """
    keys = np.arange(cache_seqlen - count, cache_seqlen)
    if block_table is None:
        return np.full(keys.shape, batch), keys
    return block_table[batch, keys // page_size], keys % page_size


def append_kv(
    k_cache: NDArray,
    v_cache: NDArray,
    k: NDArray,
    v: NDArray,
    cache_seqlens: NDArray,
    block_table: NDArray | None,
) -> None:
    """Write k, v [batch, seq_new, heads_kv, d] into the caches at rows cache_seqlens[b].., in
    place (as flash_attn_with_kvcache does before attending)."""
    seq_new = k.shape[1]
    for b in range(k.shape[0]):
        end = int(cache_seqlens[b]) + seq_new
        pages, rows = cache_rows(end, seq_new, b, block_table, k_cache.shape[1])
        k_cache[pages, rows] = k[b]
        v_cache[pages, rows] = v[b]


def gather_kv(cache: NDArray, seqlen_k: int, batch: int, block_table: NDArray | None) -> NDArray:
    """The first `seqlen_k` keys (or values) of batch entry `batch`: [seqlen_k, heads_kv, d]."""
    pages, rows = cache_rows(seqlen_k, seqlen_k, batch, block_table, cache.shape[1])
    return cache[pages, rows]


def visible(seq_q: int, seqlen_k: int, window_size: tuple[int, int]) -> NDArray:
    """[seq_q, seqlen_k] True where query token s sees key j (bottom-right aligned window)."""
    left, right = window_size
    rows = np.arange(seq_q)[:, None] + (seqlen_k - seq_q)
    cols = np.arange(seqlen_k)[None, :]
    mask = np.ones((seq_q, seqlen_k), dtype=bool)
    if right >= 0:
        mask &= cols <= rows + right
    if left >= 0:
        mask &= cols >= rows - left
    return mask


def attention_decode_reference(
    q: NDArray,
    k_cache: NDArray,
    v_cache: NDArray,
    *,
    cache_seqlens: NDArray,
    k: NDArray | None = None,
    v: NDArray | None = None,
    block_table: NDArray | None = None,
    causal: bool = False,
    scale: float | None = None,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: NDArray | None = None,
    accum_dtype: DTypeLike = np.float64,
) -> tuple[NDArray, NDArray]:
    """(O [batch, seq_q, heads_q, d], LSE [batch, heads_q, seq_q]) in accum_dtype.

    Appends k, v into the caches in place first (when given). LSE is the natural log of the
    sum of exp(scores) over the keys a row sees.
    """
    batch, seq_q, heads_q, head_dim = q.shape
    heads_kv = k_cache.shape[2]
    group = heads_q // heads_kv
    accum = np.dtype(accum_dtype)
    softmax_scale = default_scale(head_dim) if scale is None else float(scale)
    seq_new = 0
    if k is not None and v is not None:
        append_kv(k_cache, v_cache, k, v, cache_seqlens, block_table)
        seq_new = k.shape[1]
    left, right = window_size
    if causal:
        right = 0
    o = np.zeros((batch, seq_q, heads_q, head_dim), dtype=accum)
    lse = np.full((batch, heads_q, seq_q), -np.inf, dtype=accum)
    for b in range(batch):
        seqlen_k = int(cache_seqlens[b]) + seq_new
        keys = gather_kv(k_cache, seqlen_k, b, block_table).astype(accum)  # [L, hkv, d]
        values = gather_kv(v_cache, seqlen_k, b, block_table).astype(accum)
        # Query head h -> KV head h // group: [hq, L, d].
        keys_h = np.repeat(np.swapaxes(keys, 0, 1), group, axis=0)
        values_h = np.repeat(np.swapaxes(values, 0, 1), group, axis=0)
        q_h = np.swapaxes(q[b].astype(accum), 0, 1)  # [hq, sq, d]
        scores = (q_h @ np.swapaxes(keys_h, -1, -2)) * softmax_scale  # [hq, sq, L]
        if softcap > 0.0:
            scores = softcap * np.tanh(scores / softcap)
        if alibi_slopes is not None:
            scores = scores + alibi_bias(alibi_slopes, b, seq_q, seqlen_k, accum)
        mask = visible(seq_q, seqlen_k, (left, right))
        scores = np.where(mask[None], scores, -np.inf)
        row_max = scores.max(axis=-1, initial=-np.inf)  # [hq, sq]
        safe_max = np.where(np.isneginf(row_max), 0.0, row_max)
        probs = np.exp(scores - safe_max[..., None])
        row_sum = probs.sum(axis=-1)
        empty = row_sum == 0.0
        denom = np.where(empty, 1.0, row_sum)
        out = (probs @ values_h) / denom[..., None]  # [hq, sq, d]
        o[b] = np.swapaxes(np.where(empty[..., None], 0.0, out), 0, 1)
        lse[b] = np.where(empty, -np.inf, safe_max + np.log(denom))
    return o, lse


def alibi_bias(slopes: NDArray, batch: int, seq_q: int, seqlen_k: int, accum: np.dtype) -> NDArray:
    """[heads_q, seq_q, seqlen_k]: -slope_h * |s + seqlen_k - seq_q - j| of batch entry `batch`
    (slopes [heads_q], or [batch, heads_q] read at row `batch`)."""
    per_head = np.asarray(slopes, dtype=accum)
    if per_head.ndim == 2:
        per_head = per_head[batch]
    rows = np.arange(seq_q)[:, None] + (seqlen_k - seq_q)
    distance = np.abs(rows - np.arange(seqlen_k)[None, :]).astype(accum)
    return -per_head[:, None, None] * distance[None]
