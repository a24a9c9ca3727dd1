"""Runs rendered attention and GEMM kernels on the CPU through the host build of their source."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from generator import toolchain
from generator.host_build import SCHEDULES, Schedule, build_host_library
from generator.render import RenderedKernel, check_config, render
from templates.registry import family_for, get_family
from tessera_core.errors import EmulatorError, InvalidConfigError
from tessera_core.types import (
    GEMM_LAYOUTS,
    AlibiForm,
    AttentionProblem,
    DType,
    GemmLayout,
    GemmProblem,
    Layout,
    Problem,
    TileConfig,
)

NUMPY_DTYPES: dict[str, Any] = {
    "fp16": np.dtype(np.float16),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "e4m3": np.dtype(ml_dtypes.float8_e4m3fn),  # GEMM inputs only (gemm_sm90)
}
# Each tensor sits between two guard zones of poison bytes; a kernel writing past either end of
# a tensor changes them and the launch fails, instead of corrupting the Python heap.
GUARD_BYTES = 4096
POISON_BYTE = 0xFF  # NaN in f16, bf16 and f32
ALIGN_BYTES = 256


@dataclass(frozen=True)
class EmulatedRun:
    """What one emulated launch produced and cost."""

    rendered: RenderedKernel
    outputs: dict[str, np.ndarray]
    compile_time_s: float
    run_time_s: float
    cache_hit: bool


def dtype_name(array: np.ndarray) -> DType:
    """The project's dtype name of a float16 or ml_dtypes.bfloat16 array."""
    for name in ("fp16", "bf16"):
        if array.dtype == NUMPY_DTYPES[name]:
            return name
    raise TypeError(f"arrays must be float16 or ml_dtypes.bfloat16, got {array.dtype}")


def gemm_dtype_name(array: np.ndarray) -> DType:
    """dtype_name, plus e4m3 for ml_dtypes.float8_e4m3fn or uint8 (raw e4m3 codes) arrays."""
    if array.dtype == NUMPY_DTYPES["e4m3"] or array.dtype == np.uint8:
        return "e4m3"
    return dtype_name(array)


def resolve_config(
    problem: Problem, config: TileConfig | Mapping[str, int] | None, *, arch: str | None = None
) -> TileConfig:
    """The default configuration of the family serving `problem` on `arch`
    (templates.registry.family_for), or `config` checked against that family's space.

    Raises:
        InvalidConfigError: naming the field, value and rule `config` breaks.
    """
    target = arch or toolchain.default_arch()
    family = family_for(problem, target)
    if config is None:
        return family.default_config(problem, target)
    if isinstance(config, TileConfig):
        tile = config
    else:
        try:
            tile = TileConfig.from_dict(dict(config))
        except (ValueError, TypeError) as exc:
            raise InvalidConfigError(f"config={dict(config)!r}: {exc}", config=config) from None
    check_config(family, problem, tile, target)
    return tile


class _GuardedBuffer:
    """A C-contiguous array placed between two poisoned guard zones."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.name = name
        nbytes = int(np.prod(shape)) * dtype.itemsize
        self._raw = np.full(GUARD_BYTES + nbytes + GUARD_BYTES + ALIGN_BYTES, POISON_BYTE, np.uint8)
        start = GUARD_BYTES + (-(self._raw.ctypes.data + GUARD_BYTES) % ALIGN_BYTES)
        self._start, self._end = start, start + nbytes
        self.array = self._raw[start : start + nbytes].view(dtype).reshape(shape)

    @property
    def address(self) -> int:
        return int(self.array.ctypes.data)

    def check_guards(self, kernel: str) -> None:
        below = self._raw[self._start - GUARD_BYTES : self._start]
        above = self._raw[self._end : self._end + GUARD_BYTES]
        for side, zone in (("before", below), ("after", above)):
            touched = np.flatnonzero(zone != POISON_BYTE)
            if touched.size:
                raise EmulatorError(
                    f"kernel {kernel} wrote {touched.size} bytes out of bounds {side} tensor "
                    f"{self.name!r} (within {GUARD_BYTES} bytes of its end); check the store's "
                    "row/column bounds"
                )


_ACCUMULATOR_DTYPES = (np.dtype(np.float32), np.dtype(np.int32))


def run_rendered(
    rendered: RenderedKernel,
    *,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    scale: float | None = None,
    schedules: Sequence[Schedule] = SCHEDULES,
    accumulators: Collection[str] = (),
    updated_inputs: Collection[str] = (),
    params_extra: Mapping[str, Any] | None = None,
) -> EmulatedRun:
    """Build (or reuse) the host library of `rendered.source` and launch it over its grid.

    The kernel runs once per schedule on fresh buffers; a race-free kernel computes every output
    element in the same order under all of them, so outputs must agree bit for bit. Outputs start
    as NaN so elements the kernel never writes show up in any comparison, except the outputs
    named in `accumulators`, which the kernel adds into (atomics): they start as zeros, must be
    float32 (atomic_add_f32) or int32 (atomic_add_i32, decode's split counters), and every
    element that changes must have been added into by an atomic (a plain store or += there
    loses updates on a GPU, where the blocks run at once).
    Inputs named in `updated_inputs` (a cache the kernel writes into) come back among the
    outputs with their contents after the launch; `params_extra` goes to the family's
    make_params as keywords (attention_sm90: descale; attention_decode: run-time values).

    Raises:
        CompileError: the host compiler rejected the source.
        EmulatorError: the kernel faulted (deadlock, divergence, bad address, stray write), or
            its result depends on the schedule (a race), or it wrote an accumulator without an
            atomic.
    """
    family = get_family(rendered.family)
    for name in accumulators:
        if np.dtype(outputs[name][1]) not in _ACCUMULATOR_DTYPES:
            raise ValueError(
                f"accumulator {name!r} is {np.dtype(outputs[name][1])}: expected a float32 or "
                "int32 output (the element types the atomic adds count)"
            )
    problem, config = rendered.problem, rendered.config
    library = build_host_library(rendered.source)
    kernel = library.kernel(rendered.kernel_name)
    geometry = family.launch_geometry(problem, config)
    results: list[dict[str, np.ndarray]] = []
    run_time_s = 0.0
    for schedule in schedules:
        buffers: dict[str, _GuardedBuffer] = {}
        for name, array in inputs.items():
            buffers[name] = _GuardedBuffer(name, array.shape, array.dtype)
            buffers[name].array[...] = array
        for name, (shape, dtype) in outputs.items():
            buffers[name] = _GuardedBuffer(name, shape, np.dtype(dtype))  # already NaN
            if name in accumulators:
                buffers[name].array[...] = 0
        pointers = {name: buf.address for name, buf in buffers.items()}
        params: ctypes.Structure = family.make_params(
            problem, pointers=pointers, scale=scale, **(params_extra or {})
        )
        counts = {name: np.zeros(buffers[name].array.size, np.uint32) for name in accumulators}
        start = time.perf_counter()
        kernel.launch(
            params,
            grid=geometry.grid,
            block=geometry.block,
            smem_bytes=geometry.smem_bytes,
            schedule=schedule,
            regions=[(buf.address, buf.array.nbytes) for buf in buffers.values()],
            atomic_counts=[(buffers[name].address, counts[name]) for name in accumulators],
        )
        run_time_s += time.perf_counter() - start
        for buf in buffers.values():
            buf.check_guards(rendered.kernel_name)
        for name in accumulators:
            _check_atomic(rendered, name, buffers[name].array, counts[name])
        results.append({name: buffers[name].array.copy() for name in (*outputs, *updated_inputs)})
        _check_same(rendered, results[0], results[-1], schedules[0], schedule)
    return EmulatedRun(
        rendered=rendered,
        outputs=results[0],
        compile_time_s=library.compile_time_s,
        run_time_s=run_time_s,
        cache_hit=library.cache_hit,
    )


def _check_atomic(
    rendered: RenderedKernel, name: str, array: np.ndarray, counts: np.ndarray
) -> None:
    """Every element of accumulator `name` that left its zero start was added atomically."""
    written = np.count_nonzero((array.reshape(-1) != 0) & (counts == 0))
    if written:
        raise EmulatorError(
            f"kernel {rendered.kernel_name} ({rendered.config}): {written} elements of "
            f"accumulator {name!r} were written without an atomic add (a plain store or +=): on a "
            "GPU the blocks adding into them run at once and lose updates; use "
            "tessera::atomic_add_f32 (or atomic_add_i32)"
        )


def _check_same(
    rendered: RenderedKernel,
    first: Mapping[str, np.ndarray],
    other: Mapping[str, np.ndarray],
    first_schedule: Schedule,
    other_schedule: Schedule,
) -> None:
    for name, array in first.items():
        a = array.view(np.uint8).reshape((*array.shape, -1))
        b = other[name].view(np.uint8).reshape((*array.shape, -1))
        differ = int(np.count_nonzero((a != b).any(axis=-1)))
        if differ:
            raise EmulatorError(
                f"kernel {rendered.kernel_name} ({rendered.config}): {differ} elements of "
                f"{name!r} differ between schedules {first_schedule} and {other_schedule}: a "
                "race; look for a missing __syncthreads() or cp_async_wait"
            )


def attention_problem(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: np.ndarray | None = None,
    layout: Layout = "bhsd",
) -> AttentionProblem:
    """The problem that q [B,H,Sq,D], k and v [B,Hkv,Skv,D] (or [B,S,H,D] with layout "bshd")
    describe, with its variants; ValueError on mismatch."""
    form = (
        "[B,Sq,H,D] and k, v [B,Skv,Hkv,D]"
        if layout == "bshd"
        else "[B,H,Sq,D] and k, v [B,Hkv,Skv,D]"
    )
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"q, k, v must be 4-D arrays: q {form}")
    seq_axis, head_axis = (1, 2) if layout == "bshd" else (2, 1)
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q {q.shape}, k {k.shape}, v {v.shape}: need q {form}")
    dtype = dtype_name(q)
    if dtype_name(k) != dtype or dtype_name(v) != dtype:
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    b, h, d = q.shape[0], q.shape[head_axis], q.shape[3]
    alibi: AlibiForm = "none"
    if alibi_slopes is not None:
        alibi = "batch_heads" if np.ndim(alibi_slopes) == 2 else "heads"
    return AttentionProblem(
        b, h, q.shape[seq_axis], k.shape[seq_axis], d, dtype=dtype, causal=bool(causal),
        heads_kv=k.shape[head_axis], window_left=window_size[0], window_right=window_size[1],
        softcap=softcap, alibi=alibi, layout=layout,
    )  # fmt: skip


def gemm_problem(
    a: np.ndarray,
    b: np.ndarray,
    layout: GemmLayout = "nn",
    *,
    out_dtype: DType | None = None,
) -> GemmProblem:
    """The problem that a and b describe as stored in `layout` (nn: a [M,K], b [K,N]; a
    transposed a is [K,M], a transposed b [N,K]); ValueError on mismatch. e4m3 inputs
    (float8_e4m3fn or uint8 codes) write `out_dtype` (default bf16)."""
    if layout not in GEMM_LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {', '.join(GEMM_LAYOUTS)}")
    a_form = "[K,M]" if layout[0] == "t" else "[M,K]"
    b_form = "[N,K]" if layout[1] == "t" else "[K,N]"
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"a {a.shape}, b {b.shape}: need 2-D a {a_form} and b {b_form}")
    m, k = a.shape[::-1] if layout[0] == "t" else a.shape
    k_b, n = b.shape[::-1] if layout[1] == "t" else b.shape
    if k != k_b:
        raise ValueError(f"a {a.shape}, b {b.shape}: need a {a_form} and b {b_form} ({layout})")
    dtype = gemm_dtype_name(a)
    if gemm_dtype_name(b) != dtype:
        raise TypeError(f"a and b must share one dtype, got {a.dtype}, {b.dtype}")
    return GemmProblem(m, n, k, dtype=dtype, layout=layout, out_dtype=out_dtype)


def render_problem(
    problem: Problem,
    config: TileConfig | Mapping[str, int] | None,
    *,
    specialized: bool,
    arch: str | None,
) -> RenderedKernel:
    """The kernel of the family serving `problem` on `arch` (gemm_sm90 for an aligned gemm on
    sm_90a) with `config` (default: the family's)."""
    target = arch or toolchain.default_arch()
    tile = resolve_config(problem, config, arch=target)
    return render(family_for(problem, target), problem, tile, specialized=specialized, arch=target)


def run_attention_problem(
    problem: AttentionProblem,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    alibi_slopes: np.ndarray | None = None,
    cu_seqlens: tuple[np.ndarray, np.ndarray] | None = None,
    scale: float | None = None,
    config: TileConfig | Mapping[str, int] | None = None,
    specialized: bool = False,
    arch: str | None = None,
) -> EmulatedRun:
    """Render the attention kernel for `problem` and run it on q, k, v (outputs o and lse);
    a varlen problem takes `cu_seqlens` (cu_seqlens_q, cu_seqlens_k), int32 [batch + 1]."""
    from templates.attention.family import ALIBI_POINTER, CU_SEQLENS, tensor_shapes

    rendered = render_problem(problem, config, specialized=specialized, arch=arch)
    inputs = {"q": contiguous(q), "k": contiguous(k), "v": contiguous(v)}
    totals = None
    if problem.varlen:
        if cu_seqlens is None:
            raise ValueError("a varlen problem needs cu_seqlens=(cu_seqlens_q, cu_seqlens_k)")
        for name, cu in zip(CU_SEQLENS, cu_seqlens, strict=True):
            inputs[name] = contiguous(np.asarray(cu, dtype=np.int32))
        totals = (q.shape[0], k.shape[0])
    shapes = tensor_shapes(problem, totals=totals)
    if ALIBI_POINTER in shapes:
        got = None if alibi_slopes is None else np.shape(alibi_slopes)
        if got != shapes[ALIBI_POINTER]:
            raise ValueError(
                f"alibi_slopes: expected float32 of shape {shapes[ALIBI_POINTER]} for "
                f"alibi={problem.alibi!r}, got {got}"
            )
        inputs[ALIBI_POINTER] = contiguous(np.asarray(alibi_slopes, dtype=np.float32))
    return run_rendered(
        rendered,
        inputs=inputs,
        outputs={"o": (shapes["o"], q.dtype), "lse": (shapes["lse"], np.dtype(np.float32))},
        scale=scale,
    )


def run_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    causal: bool = False,
    scale: float | None = None,
    config: TileConfig | Mapping[str, int] | None = None,
    specialized: bool = False,
    arch: str | None = None,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: np.ndarray | None = None,
    layout: Layout = "bhsd",
) -> tuple[np.ndarray, np.ndarray]:
    """Attention forward on the emulator: (O in q's layout and dtype, LSE [B,H,Sq] f32).

    The variants (GQA by k's head count, window_size, softcap, alibi_slopes, layout) are
    FlashAttention-2's; see templates.attention.reference.attention_reference.

    Raises:
        InvalidConfigError: `config` is not valid for this problem.
        EmulatorError: the kernel faulted.
    """
    problem = attention_problem(
        q, k, v, causal=causal, window_size=window_size, softcap=softcap,
        alibi_slopes=alibi_slopes, layout=layout,
    )  # fmt: skip
    run = run_attention_problem(
        problem, q, k, v, alibi_slopes=alibi_slopes, scale=scale, config=config,
        specialized=specialized, arch=arch,
    )  # fmt: skip
    return run.outputs["o"], run.outputs["lse"]


def run_attention_varlen(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    cu_seqlens_q: np.ndarray,
    cu_seqlens_k: np.ndarray,
    max_seqlen_q: int,
    max_seqlen_k: int,
    causal: bool = False,
    scale: float | None = None,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: np.ndarray | None = None,
    config: TileConfig | Mapping[str, int] | None = None,
    specialized: bool = False,
    arch: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Packed-sequence attention on the emulator, FlashAttention-2's varlen convention:
    (O [total_q, heads, d] in q's dtype, LSE [heads, total_q] f32).

    q [total_q, heads, d], k and v [total_k, heads_kv, d]; cu_seqlens_* int32 [batch + 1].
    """
    if q.ndim != 3 or k.ndim != 3 or k.shape != v.shape or q.shape[2] != k.shape[2]:
        raise ValueError(
            f"q {q.shape}, k {k.shape}, v {v.shape}: need q [total_q, heads, d] and k, v "
            "[total_k, heads_kv, d]"
        )
    dtype = dtype_name(q)
    alibi: AlibiForm = "none"
    if alibi_slopes is not None:
        alibi = "batch_heads" if np.ndim(alibi_slopes) == 2 else "heads"
    problem = AttentionProblem(
        len(cu_seqlens_q) - 1, q.shape[1], max_seqlen_q, max_seqlen_k, q.shape[2], dtype=dtype,
        causal=bool(causal), heads_kv=k.shape[1], window_left=window_size[0],
        window_right=window_size[1], softcap=softcap, alibi=alibi, layout="bshd", varlen=True,
    )  # fmt: skip
    run = run_attention_problem(
        problem, q, k, v, alibi_slopes=alibi_slopes, cu_seqlens=(cu_seqlens_q, cu_seqlens_k),
        scale=scale, config=config, specialized=specialized, arch=arch,
    )  # fmt: skip
    return run.outputs["o"], run.outputs["lse"]


def run_gemm_problem(
    problem: GemmProblem,
    a: np.ndarray,
    b: np.ndarray,
    *,
    config: TileConfig | Mapping[str, int] | None = None,
    specialized: bool = False,
    arch: str | None = None,
    scale: float | None = None,
) -> EmulatedRun:
    """Render the GEMM kernel for `problem` and run it on a, b (output c).

    e4m3 inputs go to gemm_sm90, whose FP8 wgmma reads B K-major: b [K,N] is passed transposed
    ([N,K], as cuBLASLt's FP8 GEMMs take it); `scale` (the per-tensor descales' product,
    scale_a * scale_b) multiplies the fp32 accumulators before the output rounding.
    """
    rendered = render_problem(problem, config, specialized=specialized, arch=arch)
    codes = problem.dtype == "e4m3"
    a_in = a.view(np.uint8) if codes else a
    b_in = np.ascontiguousarray(b.view(np.uint8).T) if codes else b
    out = NUMPY_DTYPES[problem.output_dtype]
    return run_rendered(
        rendered,
        inputs={"a": contiguous(a_in), "b": contiguous(b_in)},
        outputs={"c": ((problem.m, problem.n), out)},
        scale=scale,
    )


def run_gemm(
    a: np.ndarray,
    b: np.ndarray,
    *,
    layout: GemmLayout = "nn",
    config: TileConfig | Mapping[str, int] | None = None,
    specialized: bool = False,
    arch: str | None = None,
    out_dtype: DType | None = None,
    scale: float | None = None,
) -> np.ndarray:
    """C = op(A) @ op(B) on the emulator, in the input dtype (`layout`: see gemm_problem; e4m3
    inputs: `out_dtype`, default bf16, times `scale`; sm_90a only, gemm_sm90).

    Raises:
        InvalidConfigError: `config` is not valid for this problem.
        EmulatorError: the kernel faulted.
    """
    problem = gemm_problem(a, b, layout, out_dtype=out_dtype)
    return run_gemm_problem(
        problem, a, b, config=config, specialized=specialized, arch=arch, scale=scale
    ).outputs["c"]


def contiguous(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array)
