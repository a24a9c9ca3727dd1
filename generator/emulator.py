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
    AttentionBackwardProblem,
    AttentionProblem,
    DType,
    GemmDType,
    GemmProblem,
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


def gemm_dtype_name(array: np.ndarray) -> GemmDType:
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


def run_rendered(
    rendered: RenderedKernel,
    *,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    scale: float | None = None,
    schedules: Sequence[Schedule] = SCHEDULES,
    accumulators: Collection[str] = (),
) -> EmulatedRun:
    """Build (or reuse) the host library of `rendered.source` and launch it over its grid.

    The kernel runs once per schedule on fresh buffers; a race-free kernel computes every output
    element in the same order under all of them, so outputs must agree bit for bit. Outputs start
    as NaN so elements the kernel never writes show up in any comparison, except the outputs
    named in `accumulators`, which the kernel adds into (atomics): they start as zeros.

    Raises:
        CompileError: the host compiler rejected the source.
        EmulatorError: the kernel faulted (deadlock, divergence, bad address, stray write), or
            its result depends on the schedule (a race).
    """
    family = get_family(rendered.family)
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
        params: ctypes.Structure = family.make_params(problem, pointers=pointers, scale=scale)
        start = time.perf_counter()
        kernel.launch(
            params,
            grid=geometry.grid,
            block=geometry.block,
            smem_bytes=geometry.smem_bytes,
            schedule=schedule,
            regions=[(buf.address, buf.array.nbytes) for buf in buffers.values()],
        )
        run_time_s += time.perf_counter() - start
        for buf in buffers.values():
            buf.check_guards(rendered.kernel_name)
        results.append({name: buffers[name].array.copy() for name in outputs})
        _check_same(rendered, results[0], results[-1], schedules[0], schedule)
    return EmulatedRun(
        rendered=rendered,
        outputs=results[0],
        compile_time_s=library.compile_time_s,
        run_time_s=run_time_s,
        cache_hit=library.cache_hit,
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
    q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool = False
) -> AttentionProblem:
    """The problem that q [B,H,Sq,D], k and v [B,H,Skv,D] describe; ValueError on mismatch."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError("q, k, v must be 4-D [batch, heads, seq, head_dim] arrays")
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"q {q.shape}, k {k.shape}, v {v.shape}: need q [B,H,Sq,D] and k, v [B,H,Skv,D]"
        )
    dtype = dtype_name(q)
    if dtype_name(k) != dtype or dtype_name(v) != dtype:
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    b, h, sq, d = q.shape
    return AttentionProblem(b, h, sq, k.shape[2], d, dtype=dtype, causal=bool(causal))


def gemm_problem(a: np.ndarray, b: np.ndarray, *, out_dtype: DType | None = None) -> GemmProblem:
    """The problem that a [M,K] and b [K,N] describe; ValueError on mismatch. e4m3 inputs
    (float8_e4m3fn or uint8 codes) write `out_dtype` (default bf16)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"a {a.shape}, b {b.shape}: need a [M,K] and b [K,N]")
    dtype = gemm_dtype_name(a)
    if gemm_dtype_name(b) != dtype:
        raise TypeError(f"a and b must share one dtype, got {a.dtype}, {b.dtype}")
    return GemmProblem(a.shape[0], b.shape[1], a.shape[1], dtype=dtype, out_dtype=out_dtype)


def _render(
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
    scale: float | None = None,
    config: TileConfig | Mapping[str, int] | None = None,
    specialized: bool = False,
    arch: str | None = None,
) -> EmulatedRun:
    """Render the attention kernel for `problem` and run it on q, k, v (outputs o and lse)."""
    rendered = _render(problem, config, specialized=specialized, arch=arch)
    b, h, sq, d = q.shape
    return run_rendered(
        rendered,
        inputs={"q": _c(q), "k": _c(k), "v": _c(v)},
        outputs={"o": ((b, h, sq, d), q.dtype), "lse": ((b, h, sq), np.dtype(np.float32))},
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
) -> tuple[np.ndarray, np.ndarray]:
    """Attention forward on the emulator: (O [B,H,Sq,D] in the input dtype, LSE [B,H,Sq] f32).

    Raises:
        InvalidConfigError: `config` is not valid for this problem.
        EmulatorError: the kernel faulted.
    """
    problem = attention_problem(q, k, v, causal=causal)
    run = run_attention_problem(
        problem, q, k, v, scale=scale, config=config, specialized=specialized, arch=arch
    )
    return run.outputs["o"], run.outputs["lse"]


def run_attention_backward_problem(
    problem: AttentionBackwardProblem,
    tensors: Mapping[str, np.ndarray],
    *,
    scale: float | None = None,
    config: TileConfig | Mapping[str, int] | None = None,
    specialized: bool = False,
    arch: str | None = None,
) -> EmulatedRun:
    """Render the attention backward kernel for `problem` and run it (outputs dq, dk, dv).

    `tensors` holds q, k, v, o, do (in the problem's dtype) and lse (float32), as the forward
    produced them. dq comes back in float32; dk and dv in the input dtype.
    """
    from templates.attention_bwd.space import deterministic

    rendered = _render(problem, config, specialized=specialized, arch=arch)
    missing = [n for n in ("q", "k", "v", "o", "lse", "do") if n not in tensors]
    if missing:
        raise ValueError(f"attention backward tensors: missing {missing}")
    q, k = tensors["q"], tensors["k"]
    inputs = {n: _c(tensors[n]) for n in ("q", "k", "v", "o")}
    inputs["lse"] = _c(np.asarray(tensors["lse"], dtype=np.float32))
    inputs["dout"] = _c(tensors["do"])
    return run_rendered(
        rendered,
        inputs=inputs,
        outputs={
            "dq": (q.shape, np.dtype(np.float32)),
            "dk": (k.shape, k.dtype),
            "dv": (k.shape, k.dtype),
        },
        scale=scale,
        accumulators=() if deterministic(rendered.config) else ("dq",),
    )


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
    rendered = _render(problem, config, specialized=specialized, arch=arch)
    codes = problem.dtype == "e4m3"
    a_in = a.view(np.uint8) if codes else a
    b_in = np.ascontiguousarray(b.view(np.uint8).T) if codes else b
    out = NUMPY_DTYPES[problem.output_dtype]
    return run_rendered(
        rendered,
        inputs={"a": _c(a_in), "b": _c(b_in)},
        outputs={"c": ((problem.m, problem.n), out)},
        scale=scale,
    )


def run_gemm(
    a: np.ndarray,
    b: np.ndarray,
    *,
    config: TileConfig | Mapping[str, int] | None = None,
    specialized: bool = False,
    arch: str | None = None,
    out_dtype: DType | None = None,
    scale: float | None = None,
) -> np.ndarray:
    """C = A @ B on the emulator, in the input dtype (e4m3 inputs: `out_dtype`, default bf16,
    times `scale`; sm_90a only, gemm_sm90).

    Raises:
        InvalidConfigError: `config` is not valid for this problem.
        EmulatorError: the kernel faulted.
    """
    problem = gemm_problem(a, b, out_dtype=out_dtype)
    return run_gemm_problem(
        problem, a, b, config=config, specialized=specialized, arch=arch, scale=scale
    ).outputs["c"]


def _c(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array)
