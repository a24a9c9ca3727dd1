"""The CUDA device path: load, launch with a by-value Params struct, verify, time (GPU only)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from core.errors import CudaError, LaunchError
from core.hardware import arch_spec
from generator import device
from generator.compile import compile_source
from generator.toolchain import default_arch
from templates.family import LaunchGeometry

pytestmark = pytest.mark.gpu

KERNEL = "device_axpy"
THREADS = 128
# y = alpha * x + y over n floats, with the dynamic shared memory the kernel was given used as a
# staging area, so a launch that skips the opt-in or mis-passes the struct produces wrong numbers.
SOURCE = r"""
#include "tessera/intrinsics.cuh"
struct Params { const float* x; float* y; float alpha; int n; };
TESSERA_KERNEL(device_axpy, Params, 128) {
  float* stage = reinterpret_cast<float*>(tessera::dynamic_smem());
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  stage[threadIdx.x] = i < p.n ? p.x[i] : 0.f;
  __syncthreads();
  if (i < p.n) p.y[i] = p.alpha * stage[threadIdx.x] + p.y[i];
}
"""
REL_TOL = 1e-6  # fp32 axpy: one rounding per element


class Params(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
        ("alpha", ctypes.c_float),
        ("n", ctypes.c_int32),
    ]


def _geometry(n: int, smem_bytes: int) -> LaunchGeometry:
    return LaunchGeometry(
        grid=(-(-n // THREADS), 1, 1), block=(THREADS, 1, 1), smem_bytes=smem_bytes
    )


def _rel_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_launch_passes_params_by_value_and_computes() -> None:
    arch = default_arch()
    compiled = compile_source(SOURCE, kernel_name=KERNEL, arch=arch)
    smem_bytes = 64 * 1024  # above 48 KiB: needs the opt-in attribute
    kernel = device.load(compiled.cubin, KERNEL, smem_bytes, ptx=compiled.ptx)
    rng = np.random.default_rng(7)
    n = 10_000
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    x_dev, y_dev = device.to_device(x), device.to_device(y)
    try:
        params = Params(x_dev.ptr, y_dev.ptr, 1.5, n)
        kernel.launch(params, _geometry(n, smem_bytes))
        got = y_dev.download((n,), np.float32)
        want = 1.5 * x.astype(np.float64) + y.astype(np.float64)
        assert _rel_error(got.astype(np.float64), want) < REL_TOL
    finally:
        x_dev.free()
        y_dev.free()


def test_unwritten_output_stays_poisoned() -> None:
    compiled = compile_source(SOURCE, kernel_name=KERNEL, arch=default_arch())
    kernel = device.load(compiled.cubin, KERNEL, 4 * THREADS)
    n = 1000
    x_dev = device.to_device(np.random.default_rng(1).standard_normal(2 * n).astype(np.float32))
    y_dev = device.allocate(2 * n * 4)
    try:
        y_dev.poison(element_bytes=4)
        kernel.launch(Params(x_dev.ptr, y_dev.ptr, 2.0, n), _geometry(n, 4 * THREADS))
        out = y_dev.download((2 * n,), np.float32)
        assert np.isnan(out[:n]).all()  # NaN + alpha*x stays NaN: poison reached the kernel
        assert np.isnan(out[n:]).all()  # past n nothing was written
    finally:
        x_dev.free()
        y_dev.free()


def test_launch_with_more_smem_than_loaded_is_refused() -> None:
    compiled = compile_source(SOURCE, kernel_name=KERNEL, arch=default_arch())
    kernel = device.load(compiled.cubin, KERNEL, 1024)
    with pytest.raises(LaunchError, match="smem_bytes>=4096"):
        kernel.launch(Params(0, 0, 1.0, 0), _geometry(128, 4096))


def test_smem_opt_in_beyond_the_arch_limit_is_refused() -> None:
    arch = default_arch()
    compiled = compile_source(SOURCE, kernel_name=KERNEL, arch=arch)
    with pytest.raises(CudaError, match="MAX_DYNAMIC_SHARED_SIZE_BYTES"):
        device.load(compiled.cubin, KERNEL, arch_spec(arch).max_smem_per_sm_bytes + 4096)


def test_time_kernel_rotates_buffers_and_returns_positive_times() -> None:
    compiled = compile_source(SOURCE, kernel_name=KERNEL, arch=default_arch())
    kernel = device.load(compiled.cubin, KERNEL, 4 * THREADS)
    n = 1 << 20
    rng = np.random.default_rng(3)
    buffers = [
        (device.to_device(rng.standard_normal(n).astype(np.float32)), device.allocate(n * 4))
        for _ in range(3)
    ]
    try:
        params = [Params(x.ptr, y.ptr, 1.0, n) for x, y in buffers]
        times_ms = device.time_kernel(kernel, params, _geometry(n, 4 * THREADS), repetitions=10)
        assert len(times_ms) == 10
        assert all(t > 0 for t in times_ms)
        assert device.median_ms(times_ms) > 0
        with pytest.raises(ValueError, match="at least 10"):
            device.time_kernel(kernel, params, _geometry(n, 4 * THREADS), repetitions=3)
    finally:
        for x, y in buffers:
            x.free()
            y.free()
