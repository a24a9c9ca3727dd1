"""FlashAttention-2's test oracle: a float64 reference, a low-precision twin and its pass rule.

FA2's tests/test_flash_attn.py judges a kernel against two references of the same math: one in
high precision and one "the way PyTorch would compute it" in the input dtype (every op rounded to
fp16/bf16, K scaled before the product). A kernel passes when its max abs error against the
high-precision one is at most a small multiple of the low-precision one's, plus a slack. Only the
facts are carried over (mask and bias semantics, the multiples and the slack); here the high
precision is float64 and both references are NumPy.

Semantics (FA2's, off = seq_k - seq_q, bottom-right aligned): query row i sees key j when
j <= i + off + right (right = 0 under causal) and j >= i + off - left, a negative side being
unbounded; softcap > 0 replaces a scaled score s by softcap * tanh(s / softcap); ALiBi adds
-slope * |i + off - j| (FA2 adds slope * j under causal: a per-row constant apart, the same
output); a row that sees no key outputs 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

DTYPES: dict[str, np.dtype] = {
    "fp16": np.dtype(np.float16),
    "bf16": np.dtype(ml_dtypes.bfloat16),
}
# FA2's slack: `<= 2 * pt_err + 1e-5` in test_flash_attn_causal / test_flash_attn_varlen_causal
# / test_flash_attn_splitkv (test_flash_attn_output uses the bare 2x).
SLACK = 1e-5


@dataclass(frozen=True)
class Variant:
    """Everything about one attention call but its tensors (FA2's keyword arguments)."""

    causal: bool = False
    window: tuple[int, int] = (-1, -1)
    softcap: float = 0.0
    scale: float | None = None  # None: 1 / sqrt(head_dim)


def visible(seq_q: int, seq_k: int, variant: Variant) -> NDArray[np.bool_]:
    """[seq_q, seq_k]: True where query row i sees key j (FA2's local/causal mask, negated)."""
    rows = np.arange(seq_q)[:, None]
    cols = np.arange(seq_k)[None, :]
    diagonal = rows + (seq_k - seq_q)
    left, right = variant.window
    if variant.causal:
        right = 0
    seen = np.ones((seq_q, seq_k), dtype=bool)
    if right >= 0:
        seen &= cols <= diagonal + right
    if left >= 0:
        seen &= cols >= diagonal - left
    return seen


def alibi_bias(slopes: NDArray, seq_q: int, seq_k: int) -> NDArray[np.float64]:
    """[..., heads, seq_q, seq_k] float64 bias of slopes [..., heads] (FA2's non-causal form)."""
    rows = np.arange(seq_q)[:, None]
    cols = np.arange(seq_k)[None, :]
    distance = np.abs(rows + (seq_k - seq_q) - cols).astype(np.float64)
    return -np.asarray(slopes, dtype=np.float64)[..., None, None] * distance


def _expand_heads(q: NDArray, kv: NDArray) -> NDArray:
    """K or V [b, heads_kv, s, d] repeated to q's heads: query head h reads KV head h // group."""
    heads, heads_kv = q.shape[1], kv.shape[1]
    return np.repeat(kv, heads // heads_kv, axis=1)


def _softmax_rows(scores: NDArray, seen: NDArray) -> NDArray:
    """Row softmax of scores over the seen keys; a row with no seen key is all zeros."""
    masked = np.where(seen, scores, -np.inf)
    peak = masked.max(axis=-1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    weights = np.where(seen, np.exp(masked - peak), 0.0)
    total = weights.sum(axis=-1, keepdims=True)
    return weights / np.where(total > 0, total, 1.0)


def attention64(
    q: NDArray, k: NDArray, v: NDArray, variant: Variant, alibi_slopes: NDArray | None = None
) -> NDArray[np.float64]:
    """O [b, heads, seq_q, d] in float64 of q [b, heads, seq_q, d], k/v [b, heads_kv, seq_k, d]."""
    q64, k64, v64 = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    k64, v64 = _expand_heads(q64, k64), _expand_heads(q64, v64)
    seq_q, seq_k, d = q64.shape[2], k64.shape[2], q64.shape[3]
    scale = variant.scale if variant.scale is not None else 1.0 / np.sqrt(d)
    scores = (q64 @ np.swapaxes(k64, -1, -2)) * scale
    if variant.softcap > 0:
        scores = variant.softcap * np.tanh(scores / variant.softcap)
    if alibi_slopes is not None:
        scores = scores + alibi_bias(alibi_slopes, seq_q, seq_k)
    return _softmax_rows(scores, visible(seq_q, seq_k, variant)) @ v64


def attention_low_precision(
    q: NDArray, k: NDArray, v: NDArray, variant: Variant, alibi_slopes: NDArray | None = None
) -> NDArray:
    """O in q's dtype, computed as FA2's `attention_ref(upcast=False, reorder_ops=True)` does on
    a GPU: K scaled first, each op's result rounded to the dtype (products and softmax
    accumulate in float32), scores promoted to float32 only by adding the float32 ALiBi bias."""
    dtype = q.dtype
    f32 = np.float32

    def rounded(x: NDArray) -> NDArray:
        return np.asarray(x, dtype=f32).astype(dtype).astype(f32)

    q32, k32, v32 = (np.asarray(x, dtype=f32) for x in (q, k, v))
    k32, v32 = _expand_heads(q32, k32), _expand_heads(q32, v32)
    seq_q, seq_k, d = q32.shape[2], k32.shape[2], q32.shape[3]
    scale = variant.scale if variant.scale is not None else 1.0 / np.sqrt(d)
    scores = rounded(q32 @ np.swapaxes(rounded(k32 * f32(scale)), -1, -2))
    if variant.softcap > 0:
        cap = f32(variant.softcap)
        scores = rounded(rounded(np.tanh(rounded(scores / cap))) * cap)
    if alibi_slopes is not None:
        scores = scores + alibi_bias(alibi_slopes, seq_q, seq_k).astype(f32)
    probs = rounded(_softmax_rows(scores, visible(seq_q, seq_k, variant)))
    return (probs @ v32).astype(dtype)


@dataclass(frozen=True)
class Verdict:
    """FA2's comparison: ours and the low-precision twin, each against float64."""

    ours_err: float
    low_precision_err: float
    multiple: float
    slack: float = SLACK

    @property
    def bound(self) -> float:
        return self.multiple * self.low_precision_err + self.slack

    @property
    def passed(self) -> bool:
        return self.ours_err <= self.bound

    def explain(self) -> str:
        return (
            f"max|ours - float64| = {self.ours_err:.3e}, max|low-precision - float64| = "
            f"{self.low_precision_err:.3e}; FA2's rule needs ours <= {self.multiple:g} x "
            f"low-precision + {self.slack:g} = {self.bound:.3e}"
        )


def judge(ours: NDArray, low_precision: NDArray, want64: NDArray, *, multiple: float) -> Verdict:
    """The verdict of FA2's pass rule; non-finite output anywhere is an error of inf."""
    ours64 = np.asarray(ours, dtype=np.float64)
    ours_err = float(np.abs(ours64 - want64).max()) if np.all(np.isfinite(ours64)) else np.inf
    low_err = float(np.abs(np.asarray(low_precision, dtype=np.float64) - want64).max())
    return Verdict(ours_err=ours_err, low_precision_err=low_err, multiple=multiple)
