"""Input checks of attention_backward: the forward's checks of q, k, v, then o, lse and do."""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.arrays import device_array, is_device_array
from runtime.signature import SignatureKey
from runtime.validate import NO_WINDOW, QKV_FORMS, _describe, attention_key

LSE_FORM = "float32 [batch, heads, seq_q] (the forward's return_lse=True output, either layout)"


def attention_backward_key(
    q: Any,
    k: Any,
    v: Any,
    o: Any,
    lse: Any,
    do: Any,
    causal: Any,
    scale: Any,
    *,
    window_size: Any = NO_WINDOW,
    softcap: Any = 0.0,
    alibi_slopes: Any = None,
    layout: Any = "bhsd",
) -> SignatureKey:
    """The signature key ("attention_bwd", ...) of a backward call, after checking every argument.

    The variants are the forward's (attention_key): the key carries them, so a variant's
    kernels never share a cache entry with another's.

    Raises:
        ValueError: one line naming the argument and the expected form.
    """
    _, dtype, shape, causal, scale, variant = attention_key(
        q, k, v, causal, scale, window_size=window_size, softcap=softcap,
        alibi_slopes=alibi_slopes, layout=layout,
    )  # fmt: skip
    on_device = not isinstance(q, np.ndarray)
    b, h, sq, _, d = shape
    q_shape = (b, sq, h, d) if layout == "bshd" else (b, h, sq, d)
    form = QKV_FORMS[layout]
    for name, x in (("o", o), ("do", do)):
        x_shape, x_dtype, x_device = _describe(name, x, 4, form)
        if x_device != on_device:
            raise ValueError(f"{name} and q must both be host (NumPy) arrays or both device arrays")
        if x_shape != q_shape:
            raise ValueError(f"{name} has shape {x_shape}; it must equal q's shape {q_shape}")
        if x_dtype != dtype:
            raise ValueError(f"{name} is {x_dtype} and q is {dtype}; expected the same dtype")
    _check_lse(lse, (b, h, sq), on_device)
    return ("attention_bwd", dtype, shape, causal, scale, variant)


def _check_lse(lse: Any, shape: tuple[int, int, int], on_device: bool) -> None:
    if isinstance(lse, np.ndarray) and not on_device:
        lse_shape, dtype_text, contiguous = lse.shape, str(lse.dtype), lse.flags.c_contiguous
    elif is_device_array(lse) and on_device:
        view = device_array(lse)
        lse_shape, dtype_text, contiguous = view.shape, view.dtype_text, view.contiguous
    else:
        where = "a CUDA device array" if on_device else "a NumPy array"
        raise ValueError(f"lse is a {type(lse).__name__}; expected {where}, {LSE_FORM}")
    if lse_shape != shape or dtype_text != "float32":
        raise ValueError(
            f"lse is {dtype_text} of shape {tuple(lse_shape)}; expected {LSE_FORM} = {shape}"
        )
    if not contiguous:
        raise ValueError(f"lse is not contiguous; pass a row-major {LSE_FORM}")
