"""Shared helpers of the template tests: random inputs, emulated launches, error measures."""

from __future__ import annotations

from collections.abc import Iterable

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

from generator.host_build import array_pointer, build_host_library
from generator.render import render
from templates.registry import get_family
from tessera_core.types import AttentionProblem, GemmProblem, Problem, TileConfig

NUMPY_DTYPES = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16}
# Relative Frobenius-norm error of a kernel output against the float64 reference: the output is
# rounded once to 16 bits (fp16: 2^-11, bf16: 2^-8 relative) and P is rounded for P*V.
REL_TOLERANCE = {"fp16": 2e-3, "bf16": 1.6e-2}
LSE_ABS_TOLERANCE = 1e-4  # lse is fp32 throughout the kernel


def random(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> NDArray:
    return rng.standard_normal(shape).astype(NUMPY_DTYPES[dtype])


def rel_error(got: NDArray, want: NDArray) -> float:
    got64 = np.asarray(got, dtype=np.float64)
    return float(np.linalg.norm(got64 - want) / np.linalg.norm(want))


def run_attention_emulated(
    problem: AttentionProblem,
    config: TileConfig,
    q: NDArray,
    k: NDArray,
    v: NDArray,
    *,
    specialized: bool,
    scale: float | None = None,
) -> tuple[NDArray, NDArray]:
    """Render, host-build and launch the attention kernel; O and LSE start poisoned with NaN."""
    o = np.full(q.shape, np.nan, dtype=q.dtype)
    lse = np.full(q.shape[:-1], np.nan, dtype=np.float32)
    arrays = {"q": q, "k": k, "v": v, "o": o, "lse": lse}
    _launch(problem, config, arrays, specialized=specialized, scale=scale)
    return o, lse


def run_gemm_emulated(
    problem: GemmProblem, config: TileConfig, a: NDArray, b: NDArray, *, specialized: bool
) -> NDArray:
    """Render, host-build and launch the gemm kernel; C starts poisoned with NaN.

    `a` and `b` may be views at any element offset (misaligned bases take the scalar path).
    """
    c = np.full((problem.m, problem.n), np.nan, dtype=a.dtype)
    _launch(problem, config, {"a": a, "b": b, "c": c}, specialized=specialized)
    return c


def _launch(
    problem: Problem,
    config: TileConfig,
    arrays: dict[str, NDArray],
    *,
    specialized: bool,
    scale: float | None = None,
) -> None:
    """Launch the family's kernel on the arrays themselves (not on guarded copies, as
    generator.emulator does: these may be views at any offset)."""
    family = get_family(problem.family)
    rendered = render(family, problem, config, specialized=specialized)
    kernel = build_host_library(rendered.source).kernel(rendered.kernel_name)
    pointers = {name: array_pointer(array) for name, array in arrays.items()}
    params = family.make_params(problem, pointers=pointers, scale=scale)
    geometry = family.launch_geometry(problem, config)
    kernel.launch(
        params,
        grid=geometry.grid,
        block=geometry.block,
        smem_bytes=geometry.smem_bytes,
        regions=_regions(arrays.values()),
    )


def _regions(arrays: Iterable[NDArray]) -> list[tuple[int, int]]:
    """The tensors' (address, nbytes): a cp.async reading outside all of them is an error."""
    return [(array_pointer(a), a.nbytes) for a in arrays]
