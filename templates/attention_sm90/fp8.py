"""FP8 e4m3 inputs of attention_sm90: quantization, the permuted V^T the kernel reads, the error
bound of its test.

FP8 wgmma takes B K-major only, so P V needs V^T [head_dim, keys]. The kernel packs P from its S
accumulators without shuffles: the four e4m3 bytes of A-register r of thread q hold keys
16 (r / 2) + {2q, 2q + 1, 8 + 2q, 9 + 2q} of each 32-key k-step, where wgmma expects keys
16 (r / 2) + 4q + {0, 1, 2, 3}. The products are summed over keys, so taking the keys in that
order is exact provided V^T's columns come in the same order: column 32c + s of V^T holds key
32c + KEY_ORDER[s]. `transpose_v` builds it (on a GPU, the same permutation by a transpose).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)
E4M3_MAX = 448.0
E4M3_MANTISSA_BITS = 3
KEYS_PER_STEP = 32  # one k32 wgmma step


def key_order() -> NDArray[np.int64]:
    """KEY_ORDER[s]: the key (within a 32-key step) in wgmma A column s of the kernel's P."""
    s = np.arange(KEYS_PER_STEP)
    half, quad, byte = s // 16, (s % 16) // 4, s % 4
    return 16 * half + 8 * (byte // 2) + 2 * quad + byte % 2


KEY_ORDER = key_order()


def quantize(x: NDArray, descale: float = 1.0) -> NDArray[np.uint8]:
    """e4m3 bits of x / descale (round to nearest even, saturating at +-448)."""
    scaled = np.clip(np.asarray(x, np.float64) / descale, -E4M3_MAX, E4M3_MAX)
    return scaled.astype(E4M3).view(np.uint8)


def dequantize(bits: NDArray[np.uint8], descale: float = 1.0) -> NDArray[np.float64]:
    """The values e4m3 `bits` stand for, times descale."""
    return bits.view(E4M3).astype(np.float64) * descale


def padded_keys(seq_kv: int) -> int:
    """V^T's row length: seq_kv rounded up to whole 32-key steps (zeros past seq_kv)."""
    return -(-seq_kv // KEYS_PER_STEP) * KEYS_PER_STEP


def transpose_v(v_bits: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """V [..., seq_kv, head_dim] e4m3 bits as the kernel's V^T [..., head_dim, padded_keys]:
    each 32-key step's columns in KEY_ORDER, zeros past seq_kv."""
    *lead, seq_kv, head_dim = v_bits.shape
    padded = np.zeros((*lead, padded_keys(seq_kv), head_dim), np.uint8)
    padded[..., :seq_kv, :] = v_bits
    steps = padded.reshape(*lead, -1, KEYS_PER_STEP, head_dim)[..., KEY_ORDER, :]
    return np.ascontiguousarray(np.swapaxes(steps.reshape(padded.shape), -1, -2))


def error_bound(q: NDArray, k: NDArray, v: NDArray, *, causal: bool, scale: float) -> float:
    """The normwise relative error of O against float64 on the dequantized inputs that the
    e4m3 rounding of P explains, with room.

    Dequantized Q, K and V are exact. The kernel rounds every probability p to e4m3 before P V:
    round to nearest even with 3 mantissa bits, relative error at most u = 2^-4, independent and
    zero-mean from one probability to the next, so E||dO||^2 <= u^2 / 3 * sum_ij p_ij^2 |v_j|^2
    (P the normalized softmax, v_j the rows of V). The bound is twice that root mean square,
    relative to ||P V||, which also covers probabilities below e4m3's normal range (2^-6, where
    the error is absolute, 2^-10) and the fp32 sums; plus 2^-8 for O's rounding to bf16.
    """
    scores = np.einsum("...qd,...kd->...qk", q, k) * scale
    if causal:
        seq_q, seq_kv = scores.shape[-2:]
        above = np.arange(seq_kv)[None, :] > np.arange(seq_q)[:, None] + (seq_kv - seq_q)
        scores = np.where(above, -np.inf, scores)
    peak = scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores - np.where(np.isneginf(peak), 0.0, peak))
    total = weights.sum(axis=-1, keepdims=True)
    probs = weights / np.where(total == 0, 1.0, total)
    rows_sq = np.sum(v * v, axis=-1)  # |v_j|^2
    spread = np.sqrt(np.sum(probs**2 * rows_sq[..., None, :]))
    unit_roundoff = 2.0 ** -(E4M3_MANTISSA_BITS + 1)
    relative = unit_roundoff / np.sqrt(3.0) * spread / np.linalg.norm(probs @ v)
    return float(2.0 * relative + 2.0**-8)
