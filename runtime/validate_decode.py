"""Input checks of attention_with_kvcache: each failure is a ValueError naming argument and form."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.arrays import DTYPE_NAMES, NUMPY_DTYPES, device_array, is_device_array
from runtime.signature import Signature, SignatureKey
from runtime.validate import DTYPE_FORM, _scale
from templates.attention_decode.space import MAX_HEAD_DIM, MMA_K
from tessera_core.types import AttentionDecodeProblem, decode_kv_bucket

Q_FORM = "[batch, seq_q, heads_q, head_dim]"
CACHE_FORM = (
    "[num_pages, page_size, heads_kv, head_dim] with a block_table, or "
    "[batch, capacity, heads_kv, head_dim] without"
)
NEW_FORM = "[batch, seq_new, heads_kv, head_dim]"
MAX_SPLITS = 256


@dataclass(frozen=True)
class DecodeOptions:
    """The run-time arguments of a decode call that are not in its signature (they never
    change the kernel binary): the window, the score cap and a forced split count; and the
    call's own problem (what a kernel built for another shape of its key launches with)."""

    window_size: tuple[int, int] = (-1, -1)
    softcap: float = 0.0
    num_splits: int = 0  # 0: the kernel's configuration decides
    problem: AttentionDecodeProblem | None = None


@dataclass(frozen=True)
class DecodeCall:
    """A checked decode call: its signature key and the inputs tuple the tiers run."""

    key: SignatureKey
    # q, k_cache, v_cache, k, v, cache_seqlens, block_table, alibi_slopes, options
    inputs: tuple[Any, ...]


@dataclass(frozen=True)
class DeviceMeta:
    """The shape and dtype of a CUDA array: all that the checks read of q, the caches, k, v."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _array(name: str, x: Any, ndim: int, form: str) -> Any:
    """`x` itself (NumPy) or its DeviceMeta (a CUDA array), checked for rank and layout."""
    if isinstance(x, np.ndarray):
        meta: Any = x
        contiguous = bool(x.flags.c_contiguous)
    elif is_device_array(x):
        view = device_array(x)
        try:
            dtype = NUMPY_DTYPES[view.dtype] if view.dtype else np.dtype(view.dtype_text)
        except TypeError:
            dtype = np.dtype(np.void)  # no NumPy dtype: refused by the dtype checks
        meta, contiguous = DeviceMeta(view.shape, dtype), view.contiguous
    else:
        raise ValueError(
            f"{name} is a {type(x).__name__}; attention_with_kvcache takes NumPy or CUDA arrays "
            f"{form}"
        )
    if meta.ndim != ndim:
        raise ValueError(f"{name} has shape {meta.shape}; expected {form}")
    if not contiguous:
        raise ValueError(f"{name} is not contiguous; pass a row-major {form}")
    return meta


def _int32(name: str, x: Any, ndim: int, form: str) -> np.ndarray:
    """The values of an int32 input, on the host (a CUDA array's small index arrays are read
    back: the cache-length bucket and the page bounds depend on them)."""
    array = _array(name, x, ndim, form)
    if array.dtype != np.int32:
        raise ValueError(f"{name} is {array.dtype}; expected int32 {form}")
    return array if isinstance(array, np.ndarray) else _host_copy(x)


def _host_copy(x: Any) -> np.ndarray:
    from runtime.cuda_backend import to_host

    return to_host(x)


def _same_place(q: Any, **others: Any) -> None:
    """Every array argument lives where q does (host or device); anything else is left to
    the argument's own check."""
    on_device = not isinstance(q, np.ndarray)
    for name, x in others.items():
        misplaced = isinstance(x, np.ndarray) if on_device else is_device_array(x)
        if misplaced:
            raise ValueError(
                f"{name} must live where q does ({'a CUDA array' if on_device else 'NumPy'}): "
                "pass every array of one call on the host, or every one on the GPU"
            )


def decode_call(
    q: Any,
    k_cache: Any,
    v_cache: Any,
    *,
    k: Any,
    v: Any,
    cache_seqlens: Any,
    block_table: Any,
    causal: Any,
    scale: Any,
    window_size: Any,
    softcap: Any,
    num_splits: Any,
    alibi_slopes: Any = None,
) -> DecodeCall:
    """Check every argument of Runtime.attention_with_kvcache and build its call.

    The signature's shape is (batch, heads_q, heads_kv, seq_q, cache-length bucket, head_dim,
    page_size or 0): every call of one bucket shares a signature, hence a tuned kernel; ALiBi
    slopes add ("alibi", "heads" or "batch_heads") to its variant (a compile-time flag).
    """
    originals = (q, k_cache, v_cache, k, v)
    _same_place(q, k_cache=k_cache, v_cache=v_cache, k=k, v=v, cache_seqlens=cache_seqlens,
                block_table=block_table, alibi_slopes=alibi_slopes)  # fmt: skip
    q = _array("q", q, 4, Q_FORM)
    k_cache = _array("k_cache", k_cache, 4, CACHE_FORM)
    v_cache = _array("v_cache", v_cache, 4, CACHE_FORM)
    dtype = DTYPE_NAMES.get(q.dtype)
    if dtype is None or k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(
            f"q, k_cache, v_cache are {q.dtype}, {k_cache.dtype}, {v_cache.dtype}; expected "
            f"{DTYPE_FORM}"
        )
    batch, seq_q, heads_q, head_dim = q.shape
    if min(q.shape) <= 0:
        raise ValueError(f"q has shape {q.shape}; expected {Q_FORM} with positive extents")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache has shape {v_cache.shape}; it must equal k_cache's")
    heads_kv = k_cache.shape[2]
    if k_cache.shape[3] != head_dim or heads_kv <= 0 or heads_q % heads_kv:
        raise ValueError(
            f"k_cache has shape {k_cache.shape}, q {q.shape}: expected {CACHE_FORM} with "
            f"head_dim={head_dim} and heads_kv dividing heads_q={heads_q}"
        )
    if head_dim % MMA_K or head_dim > MAX_HEAD_DIM:
        raise ValueError(
            f"q head_dim={head_dim} is not supported by attention_with_kvcache; expected a "
            f"multiple of {MMA_K} up to {MAX_HEAD_DIM} (the decode kernel's 16-deep mma steps)"
        )
    seq_new = _new_tokens(k, v, q, batch, heads_kv, head_dim)
    lengths = _cache_seqlens(cache_seqlens, batch)
    page_size, capacity = _capacity(block_table, k_cache, batch)
    if isinstance(cache_seqlens, int) and not isinstance(originals[0], np.ndarray):
        cache_seqlens = lengths  # a NumPy copy the CUDA launch uploads
    longest = int(lengths.max()) + seq_new
    if longest > capacity:
        raise ValueError(
            f"cache_seqlens + seq_new reaches {longest} keys but the cache holds {capacity} per "
            "sequence; grow the cache (or the block table)"
        )
    if causal is not True and causal is not False:
        raise ValueError(f"causal={causal!r}: expected a bool")
    shape = (batch, heads_q, heads_kv, seq_q, decode_kv_bucket(longest), head_dim, page_size)
    variant = () if alibi_slopes is None else (("alibi", _alibi(alibi_slopes, batch, heads_q)),)
    key: SignatureKey = ("attention_decode", dtype, shape, causal, _scale(scale), variant)
    problem = Signature.from_key(key).problem()
    assert isinstance(problem, AttentionDecodeProblem)
    options = DecodeOptions(
        _window(window_size), _softcap(softcap), _splits(num_splits), problem=problem
    )
    if isinstance(originals[0], np.ndarray):
        inputs = (q, k_cache, v_cache, k, v, lengths, block_table, alibi_slopes, options)
    else:  # CUDA arrays as given: the kernel reads them in place
        inputs = (*originals, cache_seqlens, block_table, alibi_slopes, options)
    return DecodeCall(key, inputs)


def _alibi(slopes: Any, batch: int, heads_q: int) -> str:
    """'heads' or 'batch_heads' for float32 slopes [heads_q] or [batch, heads_q]."""
    form = f"float32 [heads_q={heads_q}] or [batch={batch}, heads_q={heads_q}]"
    if is_device_array(slopes):
        meta = _array("alibi_slopes", slopes, len(device_array(slopes).shape), form)
        if meta.dtype != np.float32 or meta.shape not in ((heads_q,), (batch, heads_q)):
            raise ValueError(
                f"alibi_slopes has shape {meta.shape} and dtype {meta.dtype}; expected {form}"
            )
        slopes = _host_copy(slopes)  # for the finiteness check
    if not isinstance(slopes, np.ndarray):
        raise ValueError(f"alibi_slopes is a {type(slopes).__name__}; expected a NumPy {form}")
    if slopes.dtype != np.float32 or slopes.shape not in ((heads_q,), (batch, heads_q)):
        raise ValueError(
            f"alibi_slopes has shape {slopes.shape} and dtype {slopes.dtype}; expected {form}"
        )
    if not slopes.flags.c_contiguous or not np.all(np.isfinite(slopes)):
        raise ValueError(f"alibi_slopes must be a contiguous, finite {form}")
    return "heads" if slopes.ndim == 1 else "batch_heads"


def _new_tokens(k: Any, v: Any, q: np.ndarray, batch: int, heads_kv: int, head_dim: int) -> int:
    if k is None and v is None:
        return 0
    if k is None or v is None:
        raise ValueError("k and v (the new tokens) must be given together, or neither")
    k = _array("k", k, 4, NEW_FORM)
    v = _array("v", v, 4, NEW_FORM)
    if k.shape != v.shape or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(
            f"k {k.shape} {k.dtype}, v {v.shape} {v.dtype}: expected {NEW_FORM} in q's dtype"
        )
    if k.shape[0] != batch or k.shape[2] != heads_kv or k.shape[3] != head_dim:
        raise ValueError(
            f"k has shape {k.shape}; expected {NEW_FORM} = [{batch}, seq_new, {heads_kv}, "
            f"{head_dim}]"
        )
    return int(k.shape[1])


def _cache_seqlens(cache_seqlens: Any, batch: int) -> np.ndarray:
    if isinstance(cache_seqlens, int) and not isinstance(cache_seqlens, bool):
        cache_seqlens = np.full(batch, cache_seqlens, dtype=np.int32)
    lengths = _int32("cache_seqlens", cache_seqlens, 1, "[batch] (or an int)")
    if lengths.shape != (batch,) or (batch and int(lengths.min()) < 0):
        raise ValueError(
            f"cache_seqlens has shape {lengths.shape}; expected {batch} non-negative int32 "
            "lengths (or an int)"
        )
    return lengths


def _capacity(block_table: Any, k_cache: np.ndarray, batch: int) -> tuple[int, int]:
    """(page_size or 0, keys each sequence can hold)."""
    if block_table is None:
        if k_cache.shape[0] < batch:
            raise ValueError(
                f"k_cache has {k_cache.shape[0]} sequences for a batch of {batch}; expected "
                f"{CACHE_FORM}"
            )
        return 0, int(k_cache.shape[1])
    table = _int32("block_table", block_table, 2, "[batch, max_pages]")
    pages, page_size = k_cache.shape[0], k_cache.shape[1]
    if table.shape[0] != batch:
        raise ValueError(f"block_table has shape {table.shape}; expected [batch={batch}, ...]")
    if table.size and (int(table.min()) < 0 or int(table.max()) >= pages):
        raise ValueError(f"block_table names pages outside 0..{pages - 1} of k_cache")
    return int(page_size), int(page_size) * int(table.shape[1])


def _window(window_size: Any) -> tuple[int, int]:
    if (
        not isinstance(window_size, tuple | list)
        or len(window_size) != 2
        or not all(isinstance(w, int) and not isinstance(w, bool) and w >= -1 for w in window_size)
    ):
        raise ValueError(
            f"window_size={window_size!r}: expected (left, right), integers >= -1 (-1: unbounded)"
        )
    return int(window_size[0]), int(window_size[1])


def _softcap(softcap: Any) -> float:
    if isinstance(softcap, bool) or not isinstance(softcap, int | float):
        raise ValueError(f"softcap={softcap!r}: expected a number >= 0 (0: no cap)")
    if not math.isfinite(softcap) or softcap < 0:
        raise ValueError(f"softcap={softcap!r}: expected a finite number >= 0 (0: no cap)")
    return float(softcap)


def _splits(num_splits: Any) -> int:
    if (
        isinstance(num_splits, bool)
        or not isinstance(num_splits, int)
        or not 0 <= num_splits <= MAX_SPLITS
    ):
        raise ValueError(
            f"num_splits={num_splits!r}: expected an int in 0..{MAX_SPLITS} (0: tuned or chosen "
            "by the SM-count heuristic)"
        )
    return num_splits
