"""NumPy forward attention, blocked over keys with an online softmax: tier 1 and the test oracle."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike, NDArray

from templates.attention.family import default_scale  # the kernel's default, by definition
from tessera_core.types import Layout, normalized_window

# Keys per step: the score block [..., seq_q, block_kv] stays under this many bytes, so memory is
# bounded whatever seq_kv is (8x16x2048x2048 never allocates its 2 GiB score matrix), while
# small problems take few, large steps (NumPy's per-step overhead dominates tiny blocks).
SCORE_BLOCK_BYTES = 32 * 1024 * 1024
MIN_BLOCK_KV = 64


def _block_kv(rows: int, seq_kv: int, itemsize: int) -> int:
    """Keys per step so that one [rows, block_kv] score block fits SCORE_BLOCK_BYTES."""
    fit = SCORE_BLOCK_BYTES // max(1, rows * itemsize)
    return max(MIN_BLOCK_KV, min(seq_kv, fit))


def attention_reference(
    q: NDArray,
    k: NDArray,
    v: NDArray,
    *,
    causal: bool = False,
    scale: float | None = None,
    accum_dtype: DTypeLike = np.float32,
    block_kv: int | None = None,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: NDArray | None = None,
    layout: Layout = "bhsd",
    normalize_window: bool = True,
) -> tuple[NDArray, NDArray]:
    """softmax(Q K^T * scale) V and the row log-sum-exp, computed like the kernel does.

    Q [..., seq_q, d], K and V [..., seq_kv, d] in any float dtype (fp16, ml_dtypes.bfloat16,
    float32, ...). Causal masking is bottom-right aligned as in FlashAttention-2: query row i sees
    keys j <= i + seq_kv - seq_q. A row that sees no key gets o = 0 and lse = -inf.

    The variants, with FlashAttention-2's semantics (off = seq_kv - seq_q):
      - GQA/MQA: K and V with fewer heads (axis -3) than Q, a divisor of them; query head h
        reads KV head h // (heads // heads_kv).
      - window_size (left, right): row i sees keys i + off - left <= j <= i + off + right (-1:
        unbounded; a side >= seq_kv is unbounded), on top of the causal mask.
      - softcap > 0: scaled scores s become softcap * tanh(s / softcap).
      - alibi_slopes [heads] or [batch, heads]: scores gain -slope * |i + off - j| (causal or
        not: FA2's causal kernel adds slope * j, which differs by a per-row constant, so o is
        the same; lse here is that of the scores as written).
      - layout "bshd": q, k, v (and o) are [..., seq, heads, d] instead of [..., heads, seq, d].

    NaN and Inf propagate as in PyTorch's math SDPA: a NaN among a row's visible scores makes
    its o and lse NaN; a +inf score makes its o NaN (inf / inf) and its lse +inf; a -inf
    score is a key of weight 0 (a row of only -inf scores sees no key); NaN or Inf in V reach
    the o columns of the rows that weigh that key (a masked key's 0 * NaN is left unspecified,
    as it depends on the tiling in PyTorch too).

    Args:
        block_kv: keys per step (default: as many as keep one score block under
            SCORE_BLOCK_BYTES).
        normalize_window: False takes window_size as already normalized (varlen normalizes it
            by the longest sequence, as FA2 does, not by each sequence's own length).

    Returns:
        (o [..., seq_q, d], lse [..., seq_q]) in accum_dtype; lse is the natural log of the sum
        of exp(scaled scores).
    """
    if layout == "bshd":  # views: the heads axis moves before the sequence axis
        o, lse = attention_reference(
            *(np.swapaxes(x, -2, -3) for x in (q, k, v)), causal=causal, scale=scale,
            accum_dtype=accum_dtype, block_kv=block_kv, window_size=window_size,
            softcap=softcap, alibi_slopes=alibi_slopes, normalize_window=normalize_window,
        )  # fmt: skip
        return np.ascontiguousarray(np.swapaxes(o, -2, -3)), lse
    if layout != "bhsd":
        raise ValueError(f"layout={layout!r}: expected 'bhsd' or 'bshd'")
    if q.ndim >= 3 and k.ndim == q.ndim and k.shape[-3] != q.shape[-3]:
        heads, heads_kv = q.shape[-3], k.shape[-3]
        if heads % heads_kv or v.shape != k.shape:
            raise ValueError(
                f"shapes q{q.shape} k{k.shape} v{v.shape}: k and v heads must divide q's"
            )
        k, v = (np.repeat(x, heads // heads_kv, axis=-3) for x in (k, v))
    if q.shape[-1] != k.shape[-1] or k.shape != v.shape or q.shape[:-2] != k.shape[:-2]:
        raise ValueError(f"shapes q{q.shape} k{k.shape} v{v.shape} do not form attention")
    seq_q, head_dim = q.shape[-2], q.shape[-1]
    seq_kv = k.shape[-2]
    accum = np.dtype(accum_dtype)
    softmax_scale = default_scale(head_dim) if scale is None else float(scale)

    neg_inf, zero, one = (np.asarray(x, dtype=accum) for x in (-np.inf, 0.0, 1.0))
    q_scaled = q.astype(accum) * np.asarray(softmax_scale, dtype=accum)
    lead = q.shape[:-2]
    if block_kv is None:
        block_kv = _block_kv(math.prod(lead) * seq_q, seq_kv, accum.itemsize)
    elif block_kv < 1:
        raise ValueError(f"block_kv={block_kv}: must be a positive number of keys")
    row_max = np.full((*lead, seq_q), -np.inf, dtype=accum)
    row_sum = np.zeros((*lead, seq_q), dtype=accum)
    acc = np.zeros((*lead, seq_q, head_dim), dtype=accum)
    rows = np.arange(seq_q)[:, None]
    left, right = window_size
    if normalize_window:
        left, right = normalized_window(window_size, seq_kv, causal=causal)
    slopes = _alibi_slopes(alibi_slopes, q.shape[:-2], accum)
    with np.errstate(invalid="ignore"):  # inf - inf and 0 * inf: NaN on purpose (see above)
        for start in range(0, seq_kv, block_kv):
            stop = min(start + block_kv, seq_kv)
            mask = _mask(rows, start, stop, seq_q, seq_kv, causal=causal, window=(left, right))
            bias = None
            if slopes is not None:
                distance = np.abs(rows + (seq_kv - seq_q) - np.arange(start, stop)[None, :])
                bias = -slopes * distance.astype(accum)
            row_max, row_sum, acc = _step(
                q_scaled, k[..., start:stop, :], v[..., start:stop, :], row_max, row_sum, acc,
                accum=accum, mask=mask, softcap=softcap, bias=bias,
            )  # fmt: skip
        # NaN compares false: a row whose sum went NaN is not 'empty', its NaN propagates.
        empty = row_sum == zero
        denom = np.where(empty, one, row_sum)
        o = np.where(empty[..., None], zero, acc / denom[..., None]).astype(accum)
        lse = np.where(np.isposinf(row_max), row_max, row_max + np.log(denom))
        lse = np.where(empty, neg_inf, lse).astype(accum)
    return o, lse


def _mask(
    rows: NDArray,
    start: int,
    stop: int,
    seq_q: int,
    seq_kv: int,
    *,
    causal: bool,
    window: tuple[int, int],
) -> NDArray | None:
    """True where a key of [start, stop) is hidden from a row: above its bottom-right aligned
    diagonal (causal) or outside its window; None when every key is visible."""
    cols = np.arange(start, stop)[None, :]
    diagonal = rows + (seq_kv - seq_q)
    left, right = window
    hidden = np.zeros((rows.shape[0], stop - start), dtype=bool)
    if causal:
        hidden |= cols > diagonal
    if right >= 0:
        hidden |= cols > diagonal + right
    if left >= 0:
        hidden |= cols < diagonal - left
    return hidden if causal or left >= 0 or right >= 0 else None


def _alibi_slopes(slopes: NDArray | None, lead: tuple[int, ...], accum: np.dtype) -> NDArray | None:
    """The slopes shaped to broadcast against [..., heads, seq_q, block] scores."""
    if slopes is None:
        return None
    slopes = np.asarray(slopes, dtype=accum)
    if slopes.shape not in (lead[-1:], lead[-2:]):
        raise ValueError(
            f"alibi_slopes has shape {slopes.shape}: expected [heads]={lead[-1:]} or "
            f"[batch, heads]={lead[-2:]}"
        )
    return slopes[..., None, None]


def _step(
    q_scaled: NDArray,
    k_block: NDArray,
    v_block: NDArray,
    row_max: NDArray,
    row_sum: NDArray,
    acc: NDArray,
    *,
    accum: np.dtype,
    mask: NDArray | None,
    softcap: float = 0.0,
    bias: NDArray | None = None,
) -> tuple[NDArray, NDArray, NDArray]:
    """One block of keys of the online softmax: the new running max, sum and accumulator."""
    neg_inf, zero = (np.asarray(x, dtype=accum) for x in (-np.inf, 0.0))
    scores = q_scaled @ np.swapaxes(k_block.astype(accum), -1, -2)
    if softcap > 0.0:
        cap = np.asarray(softcap, dtype=accum)
        scores = cap * np.tanh(scores / cap)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = np.where(mask, neg_inf, scores)
    # np.maximum propagates NaN: a row with a NaN score keeps a NaN max, sum and accumulator.
    new_max = np.maximum(row_max, scores.max(axis=-1))
    # A row with no visible key yet keeps max -inf; subtract 0 so exp gives 0, not NaN.
    safe_max = np.where(np.isneginf(new_max), zero, new_max)
    alpha = np.exp(row_max - safe_max)
    probs = np.exp(scores - safe_max[..., None])
    row_sum = row_sum * alpha + probs.sum(axis=-1)
    acc = acc * alpha[..., None] + probs @ v_block.astype(accum)
    return new_max, row_sum, acc


def attention_varlen_reference(
    q: NDArray,
    k: NDArray,
    v: NDArray,
    cu_seqlens_q: NDArray,
    cu_seqlens_k: NDArray,
    *,
    causal: bool = False,
    scale: float | None = None,
    accum_dtype: DTypeLike = np.float32,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: NDArray | None = None,
    max_seqlen_k: int | None = None,
) -> tuple[NDArray, NDArray]:
    """attention_reference over packed sequences, FlashAttention-2's varlen convention.

    q [total_q, heads, d], k and v [total_k, heads_kv, d]; sequence b is rows
    cu_seqlens_q[b] .. cu_seqlens_q[b + 1] - 1 of q (of k and v by cu_seqlens_k), each its own
    attention problem (masks aligned to its own lengths; per-batch ALiBi slopes by b). The
    window is normalized by max_seqlen_k (default: the longest sequence), as FA2 does.

    Returns:
        (o [total_q, heads, d], lse [heads, total_q]) in accum_dtype.
    """
    cu_q, cu_k = (np.asarray(c, dtype=np.int64) for c in (cu_seqlens_q, cu_seqlens_k))
    if (
        cu_q.ndim != 1
        or cu_q.shape != cu_k.shape
        or cu_q[-1] != q.shape[0]
        or cu_k[-1] != k.shape[0]
    ):
        raise ValueError(
            f"cu_seqlens_q {cu_q.tolist()} and cu_seqlens_k {cu_k.tolist()}: expected two "
            f"[batch + 1] prefix sums ending at total_q={q.shape[0]} and total_k={k.shape[0]}"
        )
    accum = np.dtype(accum_dtype)
    longest_k = int(np.max(np.diff(cu_k))) if max_seqlen_k is None else max_seqlen_k
    window = normalized_window(window_size, max(longest_k, 1), causal=causal)
    o = np.zeros(q.shape, dtype=accum)
    lse = np.full((q.shape[1], q.shape[0]), -np.inf, dtype=accum)
    slopes = None if alibi_slopes is None else np.asarray(alibi_slopes)
    for b in range(cu_q.size - 1):
        rows, keys = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        if rows.start == rows.stop or keys.start == keys.stop:
            continue  # no queries, or no keys: o = 0, lse = -inf
        o_b, lse_b = attention_reference(
            q[None, rows], k[None, keys], v[None, keys], causal=causal, scale=scale,
            accum_dtype=accum, window_size=window, softcap=softcap, layout="bshd",
            normalize_window=False,
            alibi_slopes=None if slopes is None else (slopes[b] if slopes.ndim == 2 else slopes),
        )  # fmt: skip
        o[rows], lse[:, rows] = o_b[0], lse_b[0]
    return o, lse
