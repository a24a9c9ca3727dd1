"""Input checks of FP8 (e4m3) attention calls: plain bhsd NumPy q, k, v at head_dim 128 with
per-tensor descale factors (attention_sm90's inputs on sm_90a; tier 1 dequantizes elsewhere)."""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from runtime.signature import SignatureKey
from runtime.validate import _scale
from templates.attention_sm90.space import FP8_HEAD_DIM
from tessera_core.types import FP8_DTYPE

E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)
Descale = tuple[float, float, float]
FORM = "float8_e4m3fn NumPy arrays [batch, heads, seq, 128] (k, v of one shape)"


def is_fp8(x: Any) -> bool:
    """Whether `x` is an e4m3 NumPy array (ml_dtypes.float8_e4m3fn)."""
    return isinstance(x, np.ndarray) and x.dtype == E4M3


def descale_factors(descale: Any) -> Descale:
    """descale=(dq, dk, dv) as three positive finite floats; None is (1, 1, 1)."""
    if descale is None:
        return (1.0, 1.0, 1.0)
    form = "descale=(dq, dk, dv): three positive finite floats, the e4m3 inputs' scales"
    if not isinstance(descale, (tuple, list)) or len(descale) != 3:
        raise ValueError(f"descale={descale!r}: expected {form}")
    factors = []
    for f in descale:
        if isinstance(f, bool) or not isinstance(f, (int, float, np.floating, np.integer)):
            raise ValueError(f"descale={descale!r}: expected {form}")
        factors.append(float(f))
    if not all(math.isfinite(f) and f > 0.0 for f in factors):
        raise ValueError(f"descale={descale!r}: expected {form}")
    return (factors[0], factors[1], factors[2])


def attention_fp8_key(
    q: Any, k: Any, v: Any, causal: Any, scale: Any, *, plain: bool, layout: Any
) -> SignatureKey:
    """The signature key of an e4m3 attention call (dtype 'e4m3'), after checking every input.

    `plain`: no window, softcap or ALiBi was asked for (FP8 serves none of them)."""
    if not plain or layout != "bhsd":
        raise ValueError(
            "e4m3 q, k, v: window_size, softcap, alibi_slopes and layout='bshd' are not served "
            "in FP8; pass fp16 or bf16 inputs for those"
        )
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not is_fp8(x):
            kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"{name} is {kind}; e4m3 attention takes {FORM}")
        if x.ndim != 4 or min(x.shape) <= 0 or not x.flags.c_contiguous:
            raise ValueError(f"{name} has shape {x.shape}; expected row-major {FORM}")
    if k.shape != v.shape or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(
            f"q {q.shape}, k {k.shape}, v {v.shape}: expected {FORM} with q's batch and heads"
        )
    if q.shape[3] != FP8_HEAD_DIM:
        raise ValueError(
            f"q, k, v head_dim={q.shape[3]}: e4m3 attention serves head_dim {FP8_HEAD_DIM}"
        )
    if causal is not True and causal is not False:
        raise ValueError(f"causal={causal!r}: expected a bool")
    b, h, sq, d = q.shape
    return ("attention", FP8_DTYPE, (b, h, sq, k.shape[2], d), causal, _scale(scale), ())
