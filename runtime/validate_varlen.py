"""Input checks of Runtime.attention_varlen: packed sequences in FlashAttention-2's convention."""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.arrays import device_array, is_device_array
from runtime.signature import MAX_SEQLEN, SignatureKey, Variant
from runtime.validate import (
    DTYPE_FORM,
    HEAD_DIMS,
    _alibi_form,
    _describe,
    _scale,
    _softcap,
    _window,
)
from templates.attention.space import HEAD_DIM_STEP, MAX_HEAD_DIM

PACKED_FORM = "[total, heads, head_dim]"


def attention_varlen_key(
    q: Any,
    k: Any,
    v: Any,
    *,
    cu_seqlens_q: Any,
    cu_seqlens_k: Any,
    max_seqlen_q: Any,
    max_seqlen_k: Any,
    causal: Any,
    scale: Any,
    window_size: Any,
    softcap: Any,
    alibi_slopes: Any,
) -> SignatureKey:
    """The signature key of a varlen call: shape (batch, heads, max_seqlen_q, max_seqlen_k,
    head_dim), variant varlen and bshd, after checking every argument (one-line ValueErrors)."""
    q_shape, q_dtype, on_device = _describe("q", q, 3, PACKED_FORM)
    k_shape, k_dtype, k_device = _describe("k", k, 3, PACKED_FORM.replace("heads", "heads_kv"))
    v_shape, v_dtype, v_device = _describe("v", v, 3, PACKED_FORM.replace("heads", "heads_kv"))
    if not on_device == k_device == v_device:
        raise ValueError("q, k and v must all be host (NumPy) arrays or all device arrays")
    if not q_dtype == k_dtype == v_dtype:
        raise ValueError(
            f"q, k, v dtypes differ ({q_dtype}, {k_dtype}, {v_dtype}); expected {DTYPE_FORM}"
        )
    (total_q, h, d), (total_k, h_kv, _) = q_shape, k_shape
    if k_shape[2] != d or h % h_kv or v_shape != k_shape:
        raise ValueError(
            f"q {q_shape}, k {k_shape}, v {v_shape}: k and v must be [total_k, heads_kv, "
            f"head_dim={d}] with heads_kv dividing heads={h}, v the shape of k"
        )
    if d not in HEAD_DIMS:
        raise ValueError(
            f"q, k, v head_dim={d} is not supported; expected a multiple of {HEAD_DIM_STEP} "
            f"up to {MAX_HEAD_DIM}"
        )
    if causal is not True and causal is not False:
        raise ValueError(f"causal={causal!r}: expected a bool")
    max_q = _max_seqlen("max_seqlen_q", max_seqlen_q)
    max_k = _max_seqlen("max_seqlen_k", max_seqlen_k)
    batch = _cu_seqlens("cu_seqlens_q", cu_seqlens_q, total_q, max_q, on_device)
    if _cu_seqlens("cu_seqlens_k", cu_seqlens_k, total_k, max_k, on_device) != batch:
        raise ValueError("cu_seqlens_q and cu_seqlens_k must have the same length (batch + 1)")
    fields: dict[str, Any] = {"layout": "bshd", "varlen": True, MAX_SEQLEN: (max_q, max_k)}
    fields |= {"heads_kv": h_kv} if h_kv != h else {}
    left, right = _window(window_size, max_k, causal)
    fields |= {"window_left": left} if left != -1 else {}
    fields |= {"window_right": right} if right != -1 else {}
    cap = _softcap(softcap)
    fields |= {"softcap": cap} if cap else {}
    if alibi_slopes is not None:
        fields["alibi"] = _alibi_form(alibi_slopes, batch, h, on_device)
    variant: Variant = tuple(sorted(fields.items()))
    return ("attention", q_dtype, (batch, h, max_q, max_k, d), causal, _scale(scale), variant)


def _max_seqlen(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}={value!r}: expected a positive int (the longest sequence)")
    return int(value)


def _cu_seqlens(name: str, cu: Any, total: int, longest: int, on_device: bool) -> int:
    """The batch size of int32 prefix sums [batch + 1]; host arrays are checked entry by entry."""
    form = f"int32 [batch + 1] prefix sums from 0 to {total}, steps at most {longest}"
    if isinstance(cu, np.ndarray):
        shape, dtype, device = cu.shape, str(cu.dtype), False
    elif is_device_array(cu):
        view = device_array(cu)
        shape, dtype, device = view.shape, view.dtype_text, True
    else:
        raise ValueError(f"{name} is a {type(cu).__name__}; expected {form}")
    if device != on_device:
        raise ValueError(f"{name} must live where q, k and v do (host or device)")
    if dtype not in ("int32", "<i4", "i4") or len(shape) != 1 or shape[0] < 2:
        raise ValueError(f"{name} has shape {shape} and dtype {dtype}; expected {form}")
    if isinstance(cu, np.ndarray):
        steps = np.diff(cu)
        if cu[0] != 0 or cu[-1] != total or steps.min() < 0 or steps.max() > longest:
            raise ValueError(f"{name}={cu.tolist()}: expected {form}")
    return int(shape[0]) - 1
