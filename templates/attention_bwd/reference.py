"""NumPy attention backward (FlashAttention-2's algorithm, blocked over keys): tier 1 and oracle.

The tuned `attention_bwd` kernel is not written yet; this reference is its tier 1 and the oracle
it will be checked against. Conventions are the forward's (templates/attention/reference.py):
Q, dO [..., seq_q, d], K, V [..., seq_kv, d], causal masks aligned bottom-right (query row i
sees keys j <= i + seq_kv - seq_q), a row that saw no key has O = 0 and LSE = -inf and gets
zero gradients.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike, NDArray

from templates.attention.family import default_scale
from templates.attention.reference import MIN_BLOCK_KV

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
) -> tuple[NDArray, NDArray, NDArray]:
    """(dQ, dK, dV) of softmax(Q K^T * scale) V given the forward's O and LSE and dO.

    P is recomputed from Q, K and LSE (P = exp(S - LSE)), as FlashAttention-2 does:
    D = rowsum(dO * O), dV = P^T dO, dP = dO V^T, dS = P * (dP - D), dQ = dS K * scale,
    dK = dS^T Q * scale. Inputs in any float dtype; with accum_dtype=float64 the result is
    float64-accurate for the given inputs.

    Args:
        lse: natural-log log-sum-exp of the scaled scores, [..., seq_q]; -inf for rows that
            saw no key.
        block_kv: keys per step (default: as many as keep one score block under
            SCORE_BLOCK_BYTES).

    Returns:
        (dq [..., seq_q, d], dk [..., seq_kv, d], dv [..., seq_kv, d]) in accum_dtype.
    """
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
    last_visible_key = seq_q - 1 + seq_kv - seq_q
    for start in range(0, seq_kv, block_kv):
        if causal and start > last_visible_key:
            break  # no row sees these keys: their dK, dV stay zero
        stop = min(start + block_kv, seq_kv)
        k_block = k[..., start:stop, :].astype(accum)
        v_block = v[..., start:stop, :].astype(accum)
        scores = (q_a @ np.swapaxes(k_block, -1, -2)) * softmax_scale
        probs = np.exp(scores - row_lse)
        if causal:
            cols = np.arange(start, stop)[None, :]
            probs = np.where(cols > rows + (seq_kv - seq_q), zero, probs)
        dv[..., start:stop, :] = np.swapaxes(probs, -1, -2) @ do_a
        dprobs = do_a @ np.swapaxes(v_block, -1, -2)
        dscores = probs * (dprobs - delta)
        dq += (dscores @ k_block) * softmax_scale
        dk[..., start:stop, :] = (np.swapaxes(dscores, -1, -2) @ q_a) * softmax_scale
    return dq, dk, dv
