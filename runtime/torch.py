"""PyTorch ops over a Runtime: differentiable attention and gemm as torch.library custom ops.

    import runtime.torch as tt
    o = tt.attention(q, k, v, causal=True)       # [batch, heads, seq, head_dim], fp16 / bf16
    c = tt.gemm(a, b)                              # [M, K] @ [K, N]; layout="nt": a @ b.T, ...
    o.sum().backward()                             # dq, dk, dv through Runtime.attention_backward

Thin glue: tensors become the runtime's arrays and back, every numeric step runs in the
Runtime (tiers, tracing, promotion). The ops are `tessera::attention_fwd`,
`tessera::attention_bwd` and `tessera::gemm`, each with a fake (meta) implementation, and the
forward ops with an autograd formula, so `torch.compile(fullgraph=True)` traces them whole.

Which Runtime: an op's arguments can only be tensors and scalars, so `runtime=` travels as an
integer handle into a weak registry (`handle_of`); handle 0 is the process default runtime
(`default_runtime`, resolved when the op runs). The handle is an op argument, hence saved with
the forward and reused by its backward whichever thread autograd runs it on (a context variable
would not follow the backward onto autograd's worker threads). Under torch.compile the handle is
a traced constant: one compiled graph belongs to one runtime.

Devices: CPU tensors are shared with NumPy without copies (bf16 through an int16 view) and run on
any device mode of the Runtime (cpu, emulator). CUDA tensors go to a device='cuda' Runtime as
DLPack views, without copies; the outputs are the runtime's device buffers wrapped as tensors.
The runtime launches on its own stream and synchronizes, so the glue first waits for the
current stream (UNVERIFIED on a GPU: the gpu-marked test covers it). Inputs must be contiguous:
a strided q, k, v, a or b is a one-line ValueError (call .contiguous()); gradients arriving
non-contiguous from autograd are made contiguous before the backward call.

Differences from torch.nn.functional.scaled_dot_product_attention:
  - causal=True aligns the mask bottom-right as FlashAttention-2 does: query row i sees keys
    j <= i + seq_kv - seq_q (SDPA's is_causal aligns top-left: j <= i). They agree when
    seq_q == seq_kv. Top-left with seq_q < seq_kv: attention(q, k[..., :seq_q, :],
    v[..., :seq_q, :], causal=True) (a top-left row never sees keys past seq_q). Top-left with
    seq_q > seq_kv: rows below seq_kv see every key, so concatenate along seq
    attention(q[..., :seq_kv, :], k, v, causal=True) and attention(q[..., seq_kv:, :], k, v).
  - A query row that sees no key (causal, seq_q > seq_kv) outputs 0 and gets zero gradients;
    SDPA outputs NaN there.
  - No attn_mask or dropout_p; fp16 or bf16, head_dim a multiple of 8 up to 256; scale
    defaults to 1/sqrt(head_dim) like SDPA's. k, v with fewer
    heads than q is GQA (SDPA's enable_gqa: their gradients keep k's and v's shapes);
    window_size, softcap, alibi_slopes and layout="bshd" are FlashAttention-2's, forward and
    backward.
GEMM backward: dA = dC Bᵀ and dB = Aᵀ dC run through the same gemm op with the transposed
operand's layout (NT, TN: a compile-time choice of the GEMM template), so nothing is copied.
"""

from __future__ import annotations

import atexit
import itertools
import threading
import weakref
from typing import Any

import ml_dtypes
import numpy as np
import torch

from runtime.runtime import Runtime

DEFAULT_HANDLE = 0
_DTYPES = (torch.float16, torch.bfloat16)
_DTYPE_FORM = "torch.float16 or torch.bfloat16"

_lock = threading.Lock()
_default: Runtime | None = None
_by_handle: weakref.WeakValueDictionary[int, Runtime] = weakref.WeakValueDictionary()
_handles: weakref.WeakKeyDictionary[Runtime, int] = weakref.WeakKeyDictionary()
_next_handle = itertools.count(DEFAULT_HANDLE + 1)


# -- runtimes --------------------------------------------------------------------------------


def default_runtime() -> Runtime:
    """The process default Runtime (device='auto': cuda with a GPU, else cpu), made on first use."""
    global _default
    with _lock:
        if _default is None:
            _default = Runtime()
            atexit.register(_default.close)  # flush its trace; it is ours to close
        return _default


def set_default_runtime(runtime: Runtime | None) -> None:
    """Make `runtime` the one `runtime=None` calls use (None: a fresh default on next use).

    The caller keeps owning it (and closes it); a replaced default is not closed here.
    """
    global _default
    if runtime is not None and not isinstance(runtime, Runtime):
        raise ValueError(f"runtime is a {type(runtime).__name__}; expected a runtime.Runtime")
    with _lock:
        _default = runtime


@torch.compiler.assume_constant_result
def handle_of(runtime: Runtime | None) -> int:
    """The integer the ops carry for `runtime` (0 for None: the default, resolved at run time)."""
    if runtime is None:
        return DEFAULT_HANDLE
    if not isinstance(runtime, Runtime):
        raise ValueError(f"runtime is a {type(runtime).__name__}; expected None or a Runtime")
    with _lock:
        handle = _handles.get(runtime)
        if handle is None:
            handle = _handles[runtime] = next(_next_handle)
            _by_handle[handle] = runtime
        return handle


def _runtime(handle: int) -> Runtime:
    if handle == DEFAULT_HANDLE:
        return default_runtime()
    runtime = _by_handle.get(handle)
    if runtime is None:
        raise ValueError(
            f"runtime handle {handle} names no live Runtime: keep the Runtime passed as "
            "runtime= alive until the backward pass has run"
        )
    return runtime


# -- tensors <-> runtime arrays --------------------------------------------------------------


class _DLPackView:
    """A CUDA tensor seen through DLPack only (torch's CUDA array interface refuses bf16)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self._tensor = tensor

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self._tensor.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self) -> Any:
        return self._tensor.__dlpack_device__()


class _Int16Interface:
    """A runtime DeviceOutput of bf16 described as int16, which torch accepts (kept alive)."""

    def __init__(self, output: Any) -> None:
        self._output = output
        self.__cuda_array_interface__ = {**output.__cuda_array_interface__, "typestr": "<i2"}


def _to_runtime(tensor: torch.Tensor) -> Any:
    tensor = tensor.detach()  # DLPack refuses tensors that require grad (seen on an H200)
    if tensor.is_cuda:
        return _DLPackView(tensor)
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _from_runtime(array: Any, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if like.is_cuda:
        if dtype == torch.bfloat16:
            return torch.as_tensor(_Int16Interface(array), device=like.device).view(dtype)
        return torch.as_tensor(array, device=like.device)
    host = np.asarray(array)
    if dtype == torch.bfloat16:
        return torch.from_numpy(np.require(host.view(np.int16), requirements="W")).view(dtype)
    return torch.from_numpy(np.require(host, requirements="W"))


def _run(tensors: tuple[torch.Tensor, ...], call: Any) -> Any:
    """`call(*arrays)` with the runtime views of `tensors`, ordered after the current stream."""
    arrays = tuple(_to_runtime(t) for t in tensors)
    if not tensors[0].is_cuda:
        return call(*arrays)
    with torch.cuda.device(tensors[0].device):
        torch.cuda.current_stream().synchronize()
        return call(*arrays)


def _check(names: str, *tensors: torch.Tensor) -> None:
    """One-line ValueErrors for what the runtime cannot see in a torch tensor."""
    for name, tensor in zip(names.split(", "), tensors, strict=True):
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name} is a {type(tensor).__name__}; expected a torch.Tensor")
        if tensor.dtype not in _DTYPES:
            raise ValueError(f"{name} is {tensor.dtype}; expected {_DTYPE_FORM}")
        if tensor.device != tensors[0].device:
            raise ValueError(f"{names} must be on one device; {name} is on {tensor.device}")
        if not tensor.is_contiguous():
            raise ValueError(
                f"{name} is not contiguous (strides {tuple(tensor.stride())}); the kernels take "
                f"row-major tensors: pass {name}.contiguous()"
            )


# -- attention ---------------------------------------------------------------------------------


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    runtime: Runtime | None = None,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    layout: str = "bhsd",
) -> torch.Tensor:
    """softmax(q kᵀ · scale) v over [batch, heads, seq, head_dim] tensors, differentiable.

    Args:
        causal: bottom-right aligned mask (FlashAttention-2), see the module docstring.
        scale: None means 1/sqrt(head_dim).
        runtime: the Runtime to run on; None, the process default.
        window_size, softcap, alibi_slopes, layout: FlashAttention-2's variants, as
            Runtime.attention takes them (k, v with fewer heads than q is GQA/MQA). The
            backward (Runtime.attention_backward) takes the same variants; with GQA the
            gradients of k and v have k's and v's own shapes (summed over each KV head's
            query heads).
    """
    _check("q, k, v", q, k, v)
    if causal is not True and causal is not False:
        raise ValueError(f"causal={causal!r}: expected a bool")
    if not isinstance(window_size, (tuple, list)) or len(window_size) != 2:
        raise ValueError(f"window_size={window_size!r}: expected (left, right), -1 unbounded")
    if alibi_slopes is not None and not isinstance(alibi_slopes, torch.Tensor):
        raise ValueError(f"alibi_slopes is a {type(alibi_slopes).__name__}; expected a Tensor")
    left, right = (int(x) if isinstance(x, int) else x for x in window_size)
    out, _ = attention_fwd(
        q, k, v, causal, _scale(scale), handle_of(runtime), left, right, softcap, alibi_slopes,
        layout,
    )  # fmt: skip
    return out


def _scale(scale: Any) -> float | None:
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValueError(f"scale={scale!r}: expected None (1/sqrt(head_dim)) or a positive float")
    return float(scale)


@torch.library.custom_op("tessera::attention_fwd", mutates_args=())
def attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    scale: float | None,
    runtime: int,
    window_left: int = -1,
    window_right: int = -1,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    layout: str = "bhsd",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, LSE float32 [batch, heads, seq_q]) through Runtime.attention."""
    rt = _runtime(runtime)
    window = (window_left, window_right)

    def call(q_: Any, k_: Any, v_: Any, *slopes: Any) -> Any:
        alibi = slopes[0] if slopes else None
        return rt.attention(
            q_, k_, v_, causal=causal, scale=scale, return_lse=True, window_size=window,
            softcap=softcap, alibi_slopes=alibi, layout=layout,
        )  # fmt: skip

    tensors = (q, k, v) if alibi_slopes is None else (q, k, v, alibi_slopes.contiguous())
    out, lse = _run(tensors, call)
    return _from_runtime(out, q, q.dtype), _from_runtime(lse, q, torch.float32)


@attention_fwd.register_fake
def _attention_fwd_fake(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    scale: Any,
    runtime: int,
    window_left: int = -1,
    window_right: int = -1,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    layout: str = "bhsd",
) -> tuple[torch.Tensor, torch.Tensor]:
    b, h, s = (q.shape[0], q.shape[2], q.shape[1]) if layout == "bshd" else q.shape[:-1]
    return torch.empty_like(q), q.new_empty((b, h, s), dtype=torch.float32)


@torch.library.custom_op("tessera::attention_bwd", mutates_args=())
def attention_bwd(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    causal: bool,
    scale: float | None,
    runtime: int,
    window_left: int = -1,
    window_right: int = -1,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    layout: str = "bhsd",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dQ like q, dK like k, dV like v) through Runtime.attention_backward, in the inputs'
    dtype, with the forward's variants."""
    rt = _runtime(runtime)

    def call(*a: Any) -> Any:
        q_, k_, v_, o_, lse_, do_, *slopes = a
        return rt.attention_backward(
            q_, k_, v_, o_, lse_, do_, causal=causal, scale=scale,
            window_size=(window_left, window_right), softcap=softcap,
            alibi_slopes=slopes[0] if slopes else None, layout=layout,
        )  # fmt: skip

    tensors = (q, k, v, o, lse, do)
    tensors += () if alibi_slopes is None else (alibi_slopes.contiguous(),)
    dq_out, dk_out, dv_out = _run(tensors, call)
    if getattr(dq_out, "dtype", None) == np.float32:
        # A compiled tier on CUDA tensors leaves dQ as the kernel's fp32 accumulator: round it
        # on the device.
        dq = _from_runtime(dq_out, q, torch.float32).to(q.dtype)
    else:
        dq = _from_runtime(dq_out, q, q.dtype)
    return dq, _from_runtime(dk_out, k, k.dtype), _from_runtime(dv_out, v, v.dtype)


@attention_bwd.register_fake
def _attention_bwd_fake(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    causal: bool,
    scale: Any,
    runtime: int,
    window_left: int = -1,
    window_right: int = -1,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    layout: str = "bhsd",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _attention_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    q, k, v, causal, scale, runtime, *variants = inputs
    out, lse = output
    # (window_left, window_right, softcap, alibi_slopes, layout), the defaults where not given.
    defaults: tuple[Any, ...] = (-1, -1, 0.0, None, "bhsd")
    left, right, cap, slopes, layout = (*variants, *defaults[len(variants) :])
    # FlashAttention-2's set (P is recomputed), and the ALiBi slopes the forward used.
    ctx.save_for_backward(q, k, v, out, lse, *(() if slopes is None else (slopes,)))
    ctx.causal, ctx.scale, ctx.runtime = causal, scale, runtime
    ctx.variant = (left, right, cap, layout)


def _attention_backward(ctx: Any, grad_out: torch.Tensor, _grad_lse: Any) -> tuple[Any, ...]:
    q, k, v, out, lse, *slopes = ctx.saved_tensors
    left, right, cap, layout = ctx.variant
    dq, dk, dv = attention_bwd(
        grad_out.contiguous(), q, k, v, out, lse, ctx.causal, ctx.scale, ctx.runtime, left, right,
        cap, slopes[0] if slopes else None, layout,
    )  # fmt: skip
    return dq, dk, dv, None, None, None, None, None, None, None, None


attention_fwd.register_autograd(_attention_backward, setup_context=_attention_setup)


# -- gemm --------------------------------------------------------------------------------------


_LAYOUTS = ("nn", "nt", "tn", "tt")


def gemm(
    a: torch.Tensor, b: torch.Tensor, *, layout: str = "nn", runtime: Runtime | None = None
) -> torch.Tensor:
    """op(a) @ op(b) (fp32 accumulation, input dtype out), differentiable.

    Args:
        layout: "nn" a [M, K] @ b [K, N]; "nt" a @ b.T with b [N, K]; "tn" a.T @ b with
            a [K, M]; "tt" a.T @ b.T. Pass the stored (contiguous) tensor, not a view.
    """
    _check("a, b", a, b)
    if layout not in _LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {', '.join(_LAYOUTS)}")
    return gemm_op(a, b, layout, handle_of(runtime))


@torch.library.custom_op("tessera::gemm", mutates_args=())
def gemm_op(a: torch.Tensor, b: torch.Tensor, layout: str, runtime: int) -> torch.Tensor:
    """op(A) @ op(B) through Runtime.gemm."""
    rt = _runtime(runtime)

    def call(a_: Any, b_: Any) -> Any:
        return rt.gemm(a_, b_, layout=layout)

    return _from_runtime(_run((a, b), call), a, a.dtype)


def _gemm_out_shape(a: torch.Tensor, b: torch.Tensor, layout: str) -> tuple[int, int]:
    return (a.shape[1] if layout[0] == "t" else a.shape[0]), (
        b.shape[0] if layout[1] == "t" else b.shape[1]
    )


@gemm_op.register_fake
def _gemm_fake(a: torch.Tensor, b: torch.Tensor, layout: str, runtime: int) -> torch.Tensor:
    return a.new_empty(_gemm_out_shape(a, b, layout))


def _gemm_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    a, b, layout, runtime = inputs
    ctx.save_for_backward(a, b)
    ctx.layout, ctx.runtime = layout, runtime


def _gemm_backward(ctx: Any, grad_c: torch.Tensor) -> tuple[Any, ...]:
    """With A' = op(A), B' = op(B): dA' = dC B'ᵀ and dB' = A'ᵀ dC, each one gemm whose layout
    reads the stored A, B and dC as they lie (a stored-transposed operand's gradient is the
    transpose, computed directly as B' dCᵀ or dCᵀ A')."""
    a, b = ctx.saved_tensors
    grad_c = grad_c.contiguous()
    a_t, b_t = ctx.layout[0] == "t", ctx.layout[1] == "t"
    grad_a = grad_b = None
    if ctx.needs_input_grad[0]:
        if a_t:  # dA (stored [K, M]) = B' dCᵀ
            grad_a = gemm_op(b, grad_c, ("t" if b_t else "n") + "t", ctx.runtime)
        else:  # dA = dC B'ᵀ
            grad_a = gemm_op(grad_c, b, "n" + ("n" if b_t else "t"), ctx.runtime)
    if ctx.needs_input_grad[1]:
        if b_t:  # dB (stored [N, K]) = dCᵀ A'
            grad_b = gemm_op(grad_c, a, "t" + ("t" if a_t else "n"), ctx.runtime)
        else:  # dB = A'ᵀ dC
            grad_b = gemm_op(a, grad_c, ("n" if a_t else "t") + "n", ctx.runtime)
    return grad_a, grad_b, None, None


gemm_op.register_autograd(_gemm_backward, setup_context=_gemm_setup)
