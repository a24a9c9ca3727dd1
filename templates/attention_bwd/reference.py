"""NumPy attention backward (FlashAttention-2's algorithm, blocked over keys): tier 1 and oracle.

This reference is the `attention_bwd` kernel's tier 1 and the oracle it is checked against
(in float64). Conventions are the forward's (templates/attention/reference.py):
Q, dO [..., seq_q, d], K, V [..., seq_kv, d], causal masks aligned bottom-right (query row i
sees keys j <= i + seq_kv - seq_q), a row that saw no key has O = 0 and LSE = -inf and gets
zero gradients.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike, NDArray

from templates.attention.family import default_scale
from templates.attention.reference import MIN_BLOCK_KV, _alibi_slopes, _mask
from tessera_core.types import Layout, normalized_window

# Keys per step: each of the step's score-sized blocks (S, P, dP, dS), [..., seq_q, block_kv],
# stays under this many bytes, so memory is bounded whatever seq_kv is.
SCORE_BLOCK_BYTES = 16 * 1024 * 1024


def _block_kv(rows: int, seq_kv: int, itemsize: int) -> int:
    fit = SCORE_BLOCK_BYTES // max(1, rows * itemsize)
    return max(MIN_BLOCK_KV, min(seq_kv, fit))


def attention_bwd_preprocess(o: NDArray, do: NDArray, *, accum_dtype: DTypeLike) -> NDArray:
    """FA2's preprocessing pass: D = rowsum(dO * O), [..., seq_q] in accum_dtype.

    D_i equals sum_j P_ij dP_ij, the term softmax's Jacobian subtracts (dS = P * (dP - D)).
    """
    accum = np.dtype(accum_dtype)
    return np.einsum("...qd,...qd->...q", do.astype(accum), o.astype(accum))


def attention_bwd_reference(
    q: NDArray,
    k: NDArray,
    v: NDArray,
    o: NDArray,
    lse: NDArray,
    do: NDArray,
    *,
    causal: bool = False,
    scale: float | None = None,
    accum_dtype: DTypeLike = np.float32,
    block_kv: int | None = None,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: NDArray | None = None,
    layout: Layout = "bhsd",
) -> tuple[NDArray, NDArray, NDArray]:
    """(dQ, dK, dV) of softmax(Q K^T * scale) V given the forward's O and LSE and dO.

    P is recomputed from Q, K and LSE (P = exp(S - LSE)), as FlashAttention-2 does:
    D = rowsum(dO * O), dV = P^T dO, dP = dO V^T, dS = P * (dP - D), dQ = dS K * scale,
    dK = dS^T Q * scale. Inputs in any float dtype; with accum_dtype=float64 the result is
    float64-accurate for the given inputs.

    The variants are the forward's (templates/attention/reference.py, FA2 semantics): GQA/MQA
    (K, V with fewer heads; dK, dV of a KV head are the sums over its query heads), window_size,
    softcap (S becomes softcap * tanh(S / softcap), so dS gains the factor 1 - tanh^2),
    alibi_slopes (a bias, constant in the inputs: it changes P only), layout "bshd".

    Args:
        lse: natural-log log-sum-exp of the scaled logits, [..., heads, seq_q] (bhsd and bshd
            alike); -inf for rows that saw no key.
        block_kv: keys per step (default: as many as keep one score block under
            SCORE_BLOCK_BYTES).

    Returns:
        (dq like q, dk like k, dv like v) in accum_dtype.
    """
    if layout == "bshd":  # views: the heads axis moves before the sequence axis
        q_, k_, v_, o_, do_ = (np.swapaxes(x, -2, -3) for x in (q, k, v, o, do))
        grads = attention_bwd_reference(
            q_, k_, v_, o_, lse, do_, causal=causal, scale=scale, accum_dtype=accum_dtype,
            block_kv=block_kv, window_size=window_size, softcap=softcap,
            alibi_slopes=alibi_slopes,
        )  # fmt: skip
        dq, dk, dv = (np.ascontiguousarray(np.swapaxes(g, -2, -3)) for g in grads)
        return dq, dk, dv
    if layout != "bhsd":
        raise ValueError(f"layout={layout!r}: expected 'bhsd' or 'bshd'")
    group = 1
    if q.ndim >= 3 and k.ndim == q.ndim and k.shape[-3] != q.shape[-3]:
        heads, heads_kv = q.shape[-3], k.shape[-3]
        if heads % heads_kv or v.shape != k.shape:
            raise ValueError(
                f"shapes q{q.shape} k{k.shape} v{v.shape}: k and v heads must divide q's"
            )
        group = heads // heads_kv
        k, v = (np.repeat(x, group, axis=-3) for x in (k, v))
    dq, dk, dv = _grads(
        q, k, v, o, lse, do, causal=causal, scale=scale, accum_dtype=accum_dtype,
        block_kv=block_kv, window_size=window_size, softcap=softcap, alibi_slopes=alibi_slopes,
    )  # fmt: skip
    if group > 1:  # query heads h * group .. h * group + group - 1 read KV head h
        grouped = (*dk.shape[:-3], dk.shape[-3] // group, group, *dk.shape[-2:])
        dk, dv = (g.reshape(grouped).sum(axis=-3) for g in (dk, dv))
    return dq, dk, dv


def _grads(
    q: NDArray,
    k: NDArray,
    v: NDArray,
    o: NDArray,
    lse: NDArray,
    do: NDArray,
    *,
    causal: bool,
    scale: float | None,
    accum_dtype: DTypeLike,
    block_kv: int | None,
    window_size: tuple[int, int],
    softcap: float,
    alibi_slopes: NDArray | None,
) -> tuple[NDArray, NDArray, NDArray]:
    """The gradients with K and V already at q's heads ([..., heads, seq, d] each)."""
    lead, (seq_q, head_dim), seq_kv = q.shape[:-2], q.shape[-2:], k.shape[-2]
    if (
        k.shape != v.shape
        or k.shape[:-2] != lead
        or k.shape[-1] != head_dim
        or o.shape != q.shape
        or do.shape != q.shape
        or lse.shape != q.shape[:-1]
    ):
        raise ValueError(
            f"shapes q{q.shape} k{k.shape} v{v.shape} o{o.shape} lse{lse.shape} do{do.shape} "
            "do not form an attention backward"
        )
    accum = np.dtype(accum_dtype)
    softmax_scale = np.asarray(default_scale(head_dim) if scale is None else scale, dtype=accum)
    if block_kv is None:
        block_kv = _block_kv(math.prod(lead) * seq_q, seq_kv, accum.itemsize)
    elif block_kv < 1:
        raise ValueError(f"block_kv={block_kv}: must be a positive number of keys")

    q_a, do_a = q.astype(accum), do.astype(accum)
    delta = attention_bwd_preprocess(o, do, accum_dtype=accum)[..., None]
    # Rows that saw no key: exp(S - inf) = 0 makes their P, hence every gradient term, zero.
    lse_a = lse.astype(accum)
    row_lse = np.where(np.isneginf(lse_a), np.inf, lse_a)[..., None]
    zero = np.asarray(0.0, dtype=accum)
    dq = np.zeros(q.shape, dtype=accum)
    dk = np.zeros(k.shape, dtype=accum)
    dv = np.zeros(v.shape, dtype=accum)
    rows = np.arange(seq_q)[:, None]
    window = normalized_window(window_size, seq_kv, causal=causal)
    slopes = _alibi_slopes(alibi_slopes, lead, accum)
    last_visible_key = seq_q - 1 + seq_kv - seq_q
    for start in range(0, seq_kv, block_kv):
        if causal and start > last_visible_key:
            break  # no row sees these keys: their dK, dV stay zero
        stop = min(start + block_kv, seq_kv)
        k_block = k[..., start:stop, :].astype(accum)
        v_block = v[..., start:stop, :].astype(accum)
        scores = (q_a @ np.swapaxes(k_block, -1, -2)) * softmax_scale
        # d logits / d scores: 1 without softcap, 1 - tanh^2 with it.
        slope = np.ones_like(scores)
        if softcap > 0.0:
            cap = np.asarray(softcap, dtype=accum)
            capped = np.tanh(scores / cap)
            scores, slope = cap * capped, 1.0 - capped * capped
        if slopes is not None:
            distance = np.abs(rows + (seq_kv - seq_q) - np.arange(start, stop)[None, :])
            scores = scores - slopes * distance.astype(accum)
        probs = np.exp(scores - row_lse)
        mask = _mask(rows, start, stop, seq_q, seq_kv, causal=causal, window=window)
        if mask is not None:
            probs = np.where(mask, zero, probs)
        dv[..., start:stop, :] = np.swapaxes(probs, -1, -2) @ do_a
        dprobs = do_a @ np.swapaxes(v_block, -1, -2)
        dscores = probs * (dprobs - delta) * slope
        dq += (dscores @ k_block) * softmax_scale
        dk[..., start:stop, :] = (np.swapaxes(dscores, -1, -2) @ q_a) * softmax_scale
    return dq, dk, dv
