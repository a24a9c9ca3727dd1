"""Input checks of the entry points: each failure is a ValueError naming argument and form."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from runtime.arrays import DTYPE_NAMES, device_array, dtype_name, is_device_array
from runtime.signature import SignatureKey, Variant
from templates.attention.space import HEAD_DIM_STEP, MAX_HEAD_DIM
from tessera_core.errors import InvalidConfigError
from tessera_core.types import GEMM_LAYOUTS, LAYOUTS, Problem, TileConfig, normalized_window

# head_dim is a compile-time tile dimension of the attention template: whole 16-byte chunks, up
# to the template's maximum (templates.attention.space's head_dim rule).
HEAD_DIMS: tuple[int, ...] = tuple(range(HEAD_DIM_STEP, MAX_HEAD_DIM + 1, HEAD_DIM_STEP))
NO_WINDOW = (-1, -1)
_HEAD_DIM_SET = frozenset(HEAD_DIMS)
QKV_FORM = "[batch, heads, seq, head_dim]"
QKV_FORMS = {"bhsd": QKV_FORM, "bshd": "[batch, seq, heads, head_dim]"}
DTYPE_FORM = "float16 or bfloat16 (ml_dtypes.bfloat16), the same for every input"


def attention_key(
    q: Any,
    k: Any,
    v: Any,
    causal: Any,
    scale: Any,
    *,
    window_size: Any = NO_WINDOW,
    softcap: Any = 0.0,
    alibi_slopes: Any = None,
    layout: Any = "bhsd",
) -> SignatureKey:
    """The signature key of an attention call, after checking every argument."""
    plain = window_size == NO_WINDOW and softcap == 0.0 and alibi_slopes is None
    if plain and layout == "bhsd":
        fast = _attention_key_fast(q, k, v, causal, scale)
        if fast is not None:
            return fast
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {', '.join(map(repr, LAYOUTS))}")
    form = QKV_FORMS[layout]
    kv_form = form.replace("heads", "heads_kv")
    q_shape, q_dtype, q_device = _describe("q", q, 4, form)
    k_shape, k_dtype, k_device = _describe("k", k, 4, kv_form)
    v_shape, v_dtype, v_device = _describe("v", v, 4, kv_form)
    if not q_device == k_device == v_device:
        raise ValueError("q, k and v must all be host (NumPy) arrays or all device arrays")
    if not q_dtype == k_dtype == v_dtype:
        raise ValueError(
            f"q, k, v dtypes differ ({q_dtype}, {k_dtype}, {v_dtype}); expected {DTYPE_FORM}"
        )
    seq_axis, head_axis = (1, 2) if layout == "bshd" else (2, 1)
    b, h, sq, d = q_shape[0], q_shape[head_axis], q_shape[seq_axis], q_shape[3]
    h_kv, skv = k_shape[head_axis], k_shape[seq_axis]
    if k_shape[0] != b or k_shape[3] != d or h % h_kv:
        raise ValueError(
            f"k has shape {k_shape}, q has {q_shape}: k must be {kv_form} with batch={b}, "
            f"head_dim={d} and heads_kv dividing heads={h} (GQA/MQA)"
        )
    if v_shape != k_shape:
        raise ValueError(f"v has shape {v_shape}; it must equal k's shape {k_shape}")
    if d not in HEAD_DIMS:
        raise ValueError(
            f"q, k, v head_dim={d} is not supported; expected a multiple of {HEAD_DIM_STEP} "
            f"up to {MAX_HEAD_DIM}"
        )
    if causal is not True and causal is not False:
        raise ValueError(f"causal={causal!r}: expected a bool")
    variant: dict[str, Any] = {"heads_kv": h_kv} if h_kv != h else {}
    left, right = _window(window_size, skv, causal)
    variant |= {"window_left": left} if left != -1 else {}
    variant |= {"window_right": right} if right != -1 else {}
    cap = _softcap(softcap)
    variant |= {"softcap": cap} if cap else {}
    if alibi_slopes is not None:
        variant["alibi"] = _alibi_form(alibi_slopes, b, h, q_device)
    if layout != "bhsd":
        variant["layout"] = layout
    key_variant: Variant = tuple(sorted(variant.items()))
    return ("attention", q_dtype, (b, h, sq, skv, d), causal, _scale(scale), key_variant)


def _window(window_size: Any, seq_kv: int, causal: bool) -> tuple[int, int]:
    form = "window_size=(left, right): two integers >= -1 (-1: unbounded), as FlashAttention's"
    if not isinstance(window_size, (tuple, list)) or len(window_size) != 2:
        raise ValueError(f"window_size={window_size!r}: expected {form}")
    sides = tuple(int(x) if isinstance(x, np.integer) else x for x in window_size)
    try:
        return normalized_window(sides, seq_kv, causal=causal)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"window_size={tuple(window_size)!r}: {exc}") from None


def _softcap(softcap: Any) -> float:
    if isinstance(softcap, bool) or not isinstance(softcap, (int, float, np.floating, np.integer)):
        raise ValueError(f"softcap={softcap!r}: expected 0.0 (off) or a positive finite float")
    value = float(softcap)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"softcap={softcap!r}: expected 0.0 (off) or a positive finite float")
    return value


def _alibi_form(slopes: Any, batch: int, heads: int, on_device: bool) -> str:
    """'heads' or 'batch_heads' for float32 slopes of shape [heads] or [batch, heads]."""
    form = f"float32 [heads={heads}] or [batch={batch}, heads={heads}]"
    if isinstance(slopes, np.ndarray):
        shape, dtype, contiguous, device = slopes.shape, str(slopes.dtype), True, False
        contiguous = slopes.flags.c_contiguous
    elif is_device_array(slopes):
        view = device_array(slopes)
        shape, dtype, contiguous, device = view.shape, view.dtype_text, view.contiguous, True
    else:
        raise ValueError(f"alibi_slopes is a {type(slopes).__name__}; expected {form}")
    if device != on_device:
        raise ValueError("alibi_slopes must live where q, k and v do (host or device)")
    if dtype not in ("float32", "<f4", "f4") or shape not in ((heads,), (batch, heads)):
        raise ValueError(f"alibi_slopes has shape {shape} and dtype {dtype}; expected {form}")
    if not contiguous:
        raise ValueError("alibi_slopes is not contiguous; pass a row-major array")
    return "heads" if len(shape) == 1 else "batch_heads"


def _attention_key_fast(q: Any, k: Any, v: Any, causal: Any, scale: Any) -> SignatureKey | None:
    """The key of a well-formed NumPy call in a few hundred nanoseconds, else None.

    The dispatcher's per-call budget is a few microseconds, so the common case is checked
    with plain comparisons; anything unusual goes through the explanatory checks below.
    """
    if type(q) is not np.ndarray or type(k) is not np.ndarray or type(v) is not np.ndarray:
        return None
    q_shape, k_shape = q.shape, k.shape
    dtype = q.dtype
    name = DTYPE_NAMES.get(dtype)
    if (
        name is None
        or len(q_shape) != 4
        or len(k_shape) != 4
        or v.shape != k_shape
        or k.dtype != dtype
        or v.dtype != dtype
        or q_shape[0] != k_shape[0]
        or q_shape[1] != k_shape[1]
        or q_shape[3] != k_shape[3]
        or q_shape[3] not in _HEAD_DIM_SET
        or min(q_shape) <= 0
        or k_shape[2] <= 0
        or not (q.flags.c_contiguous and k.flags.c_contiguous and v.flags.c_contiguous)
        or (causal is not True and causal is not False)
    ):
        return None
    if scale is not None and (type(scale) is not float or not 0.0 < scale < math.inf):
        return None
    b, h, sq, d = q_shape
    return ("attention", name, (b, h, sq, k_shape[2], d), causal, scale, ())


def gemm_key(a: Any, b: Any, layout: Any = "nn") -> SignatureKey:
    """The signature key of a GEMM call, after checking every argument.

    `layout`: nn (a [M, K], b [K, N]), nt (b stored [N, K]), tn (a stored [K, M]) or tt.
    """
    if layout not in GEMM_LAYOUTS:
        raise ValueError(
            f"layout={layout!r}: expected one of {', '.join(GEMM_LAYOUTS)} (A's then B's "
            "storage: n as given, t transposed)"
        )
    a_form = "[K, M]" if layout[0] == "t" else "[M, K]"
    b_form = "[N, K]" if layout[1] == "t" else "[K, N]"
    a_shape, a_dtype, a_device = _describe("a", a, 2, a_form)
    b_shape, b_dtype, b_device = _describe("b", b, 2, b_form)
    if a_device != b_device:
        raise ValueError("a and b must both be host (NumPy) arrays or both device arrays")
    if a_dtype != b_dtype:
        raise ValueError(f"a is {a_dtype} and b is {b_dtype}; expected {DTYPE_FORM}")
    m, k = a_shape[::-1] if layout[0] == "t" else a_shape
    k_b, n = b_shape[::-1] if layout[1] == "t" else b_shape
    if k != k_b:
        want = f"[N, K={k}]" if layout[1] == "t" else f"[K={k}, N]"
        raise ValueError(
            f"a has shape {a_shape} and b {b_shape}: with layout {layout}, b must be {want}"
        )
    variant: Variant = () if layout == "nn" else (("layout", layout),)
    return ("gemm", a_dtype, (m, n, k), False, None, variant)


def tile_config(config: Mapping[str, Any] | TileConfig, problem: Problem, arch: str) -> TileConfig:
    """A forced configuration checked against the family's space (InvalidConfigError if not)."""
    from templates.registry import family_for

    if not isinstance(config, (TileConfig, Mapping)):
        raise InvalidConfigError(
            f"config={config!r}: expected None, a TileConfig or a dict of "
            "block_m, block_n, block_k, num_warps and num_stages"
        )
    try:
        tile = config if isinstance(config, TileConfig) else TileConfig.from_dict(dict(config))
    except (TypeError, ValueError) as exc:
        raise InvalidConfigError(f"config={config!r}: {exc}") from None
    reasons = family_for(problem, arch).space.violations(tile, problem, arch)
    if reasons:
        raise InvalidConfigError(
            f"config {tile.to_dict()} is invalid for {problem.op} {problem.shape_str()} "
            f"{problem.dtype} on {arch}: "
            + "; ".join(reasons)
            + "; pass config=None to let the runtime choose",
            config=tile.to_dict(),
        )
    return tile


def _describe(name: str, x: Any, rank: int, form: str) -> tuple[tuple[int, ...], str, bool]:
    """(shape, dtype name, on device) of one input; ValueError for anything unusable."""
    if isinstance(x, np.ndarray):
        shape: tuple[int, ...] = x.shape
        dtype = dtype_name(x.dtype)
        contiguous = x.flags.c_contiguous
        on_device = False
    elif is_device_array(x):
        view = device_array(x)
        shape, dtype, contiguous = view.shape, view.dtype, view.contiguous
        on_device = True
    else:
        raise ValueError(
            f"{name} is a {type(x).__name__}; expected a NumPy array or a CUDA array "
            f"(__cuda_array_interface__ or DLPack) of shape {form}"
        )
    if len(shape) != rank:
        raise ValueError(f"{name} has rank {len(shape)} (shape {shape}); expected {form}")
    if dtype is None:
        dtype_text = str(x.dtype) if isinstance(x, np.ndarray) else device_array(x).dtype_text
        raise ValueError(f"{name} has dtype {dtype_text}; expected {DTYPE_FORM}")
    if min(shape) <= 0:
        raise ValueError(f"{name} has shape {shape}; every dimension of {form} must be > 0")
    if not contiguous:
        raise ValueError(
            f"{name} is not contiguous; pass a row-major {form} array "
            "(e.g. numpy.ascontiguousarray)"
        )
    return shape, dtype, on_device


def _scale(scale: Any) -> float | None:
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)):
        raise ValueError(f"scale={scale!r}: expected None or a positive finite float")
    value = float(scale)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(
            f"scale={scale!r}: expected None (1/sqrt(head_dim)) or a positive finite float"
        )
    return value
