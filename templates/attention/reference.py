"""NumPy forward attention, blocked over keys with an online softmax: tier 1 and the test oracle."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike, NDArray

from templates.attention.family import default_scale  # the kernel's default, by definition

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
) -> tuple[NDArray, NDArray]:
    """softmax(Q K^T * scale) V and the row log-sum-exp, computed like the kernel does.

    Q [..., seq_q, d], K and V [..., seq_kv, d] in any float dtype (fp16, ml_dtypes.bfloat16,
    float32, ...). Causal masking is bottom-right aligned as in FlashAttention-2: query row i sees
    keys j <= i + seq_kv - seq_q. A row that sees no key gets o = 0 and lse = -inf.

    NaN and Inf propagate as in PyTorch's math SDPA: a NaN among a row's visible scores makes
    its o and lse NaN; a +inf score makes its o NaN (inf / inf) and its lse +inf; a -inf
    score is a key of weight 0 (a row of only -inf scores sees no key); NaN or Inf in V reach
    the o columns of the rows that weigh that key (a masked key's 0 * NaN is left unspecified,
    as it depends on the tiling in PyTorch too).

    Args:
        block_kv: keys per step (default: as many as keep one score block under
            SCORE_BLOCK_BYTES).

    Returns:
        (o [..., seq_q, d], lse [..., seq_q]) in accum_dtype; lse is the natural log of the sum
        of exp(scaled scores).
    """
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
    with np.errstate(invalid="ignore"):  # inf - inf and 0 * inf: NaN on purpose (see above)
        for start in range(0, seq_kv, block_kv):
            if causal and start > seq_q - 1 + seq_kv - seq_q:
                break  # every later key is above the diagonal of every row
            stop = min(start + block_kv, seq_kv)
            mask = _causal_mask(rows, start, stop, seq_q, seq_kv) if causal else None
            row_max, row_sum, acc = _step(
                q_scaled, k[..., start:stop, :], v[..., start:stop, :], row_max, row_sum, acc,
                accum=accum, mask=mask,
            )  # fmt: skip
        # NaN compares false: a row whose sum went NaN is not 'empty', its NaN propagates.
        empty = row_sum == zero
        denom = np.where(empty, one, row_sum)
        o = np.where(empty[..., None], zero, acc / denom[..., None]).astype(accum)
        lse = np.where(np.isposinf(row_max), row_max, row_max + np.log(denom))
        lse = np.where(empty, neg_inf, lse).astype(accum)
    return o, lse


def _causal_mask(rows: NDArray, start: int, stop: int, seq_q: int, seq_kv: int) -> NDArray:
    """True where a key of [start, stop) lies above a row's bottom-right aligned diagonal."""
    cols = np.arange(start, stop)[None, :]
    return cols > rows + (seq_kv - seq_q)


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
) -> tuple[NDArray, NDArray, NDArray]:
    """One block of keys of the online softmax: the new running max, sum and accumulator."""
    neg_inf, zero = (np.asarray(x, dtype=accum) for x in (-np.inf, 0.0))
    scores = q_scaled @ np.swapaxes(k_block.astype(accum), -1, -2)
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
