"""The CUDA device path: load, launch with a by-value Params struct, verify, time.

The gpu-marked tests run it for real; the others check the driver call sequence against a
fake `cuda.bindings.driver` and `cuda.core`, everywhere.
"""

from __future__ import annotations

import ctypes
import enum
import threading
import types
from typing import Any, ClassVar

import numpy as np
import pytest

from generator import device
from generator.compile import compile_source
from generator.toolchain import default_arch
from templates.family import LaunchGeometry
from tessera_core.errors import CudaError, LaunchError
from tessera_core.hardware import arch_spec

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


@pytest.mark.gpu
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


@pytest.mark.gpu
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


@pytest.mark.gpu
def test_an_unloadable_cubin_falls_back_to_the_ptx() -> None:
    compiled = compile_source(SOURCE, kernel_name=KERNEL, arch=default_arch())
    kernel = device.load(b"not a cubin", KERNEL, 4 * THREADS, ptx=compiled.ptx)
    n = 300
    x = np.arange(n, dtype=np.float32)
    x_dev, y_dev = device.to_device(x), device.to_device(np.ones(n, np.float32))
    try:
        kernel.launch(Params(x_dev.ptr, y_dev.ptr, 2.0, n), _geometry(n, 4 * THREADS))
        np.testing.assert_array_equal(y_dev.download((n,), np.float32), 2.0 * x + 1.0)
    finally:
        x_dev.free()
        y_dev.free()


@pytest.mark.gpu
def test_launch_with_more_smem_than_loaded_is_refused() -> None:
    compiled = compile_source(SOURCE, kernel_name=KERNEL, arch=default_arch())
    kernel = device.load(compiled.cubin, KERNEL, 1024)
    with pytest.raises(LaunchError, match="smem_bytes>=4096"):
        kernel.launch(Params(0, 0, 1.0, 0), _geometry(128, 4096))


@pytest.mark.gpu
def test_smem_opt_in_beyond_the_arch_limit_is_refused() -> None:
    arch = default_arch()
    compiled = compile_source(SOURCE, kernel_name=KERNEL, arch=arch)
    with pytest.raises(CudaError, match="MAX_DYNAMIC_SHARED_SIZE_BYTES"):
        device.load(compiled.cubin, KERNEL, arch_spec(arch).max_smem_per_sm_bytes + 4096)


@pytest.mark.gpu
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


# -- the driver call sequence, against fakes (no GPU needed) ------------------------------


class Status(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_NO_BINARY_FOR_GPU = 209


class FakeDriver:
    """The part of cuda.bindings.driver generator.device uses, with the real call shapes."""

    class CUkernel:
        def __init__(self, kind: str) -> None:
            self.kind = kind

    class CUfunction_attribute(enum.IntEnum):
        CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8

    def __init__(self, *, cubin_loads: bool = True) -> None:
        self.cubin_loads = cubin_loads
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.launched: dict[str, Any] = {}

    def cuKernelGetFunction(self, kernel: Any) -> tuple[Status, Any]:
        self.calls.append(("cuKernelGetFunction", (kernel,)))
        if kernel.kind == "cubin" and not self.cubin_loads:  # lazy loading fails only here
            return (Status.CUDA_ERROR_NO_BINARY_FOR_GPU, None)
        return (Status.CUDA_SUCCESS, f"function<{kernel.kind}>")

    def cuFuncSetAttribute(self, hfunc: Any, attrib: Any, value: int) -> tuple[Status]:
        self.calls.append(("cuFuncSetAttribute", (hfunc, attrib, value)))
        return (Status.CUDA_SUCCESS,)

    def cuLaunchKernel(self, *args: Any) -> tuple[Status]:
        # The binding's signature: f, grid x/y/z, block x/y/z, sharedMemBytes, hStream,
        # kernelParams (an int is taken as the address of a ready void*[]), extra.
        assert len(args) == 11
        f, gx, gy, gz, bx, by, bz, smem, stream, kernel_params, extra = args
        assert isinstance(kernel_params, int) and extra == 0
        struct_address = ctypes.cast(kernel_params, ctypes.POINTER(ctypes.c_void_p))[0]
        params = Params.from_address(struct_address)  # what the driver copies by value
        self.launched = {
            "function": f,
            "grid": (gx, gy, gz),
            "block": (bx, by, bz),
            "smem_bytes": smem,
            "stream": stream,
            "params": (params.x, params.y, params.alpha, params.n),
        }
        return (Status.CUDA_SUCCESS,)


class FakeEvent:
    def __init__(self, time_ms: float) -> None:
        self.time_ms = time_ms

    def __sub__(self, other: FakeEvent) -> float:  # cuda.core: elapsed milliseconds
        return self.time_ms - other.time_ms


class FakeStream:
    def __init__(self, options: Any, *, faults: bool) -> None:
        self.options, self.faults, self.closed = options, faults, False
        self.handle = "timing-stream"
        self.clock_ms = 0.0

    def record(self, event: Any = None, options: Any = None) -> FakeEvent:
        assert options is not None and options.timing_enabled
        self.clock_ms += 0.25
        return FakeEvent(self.clock_ms)

    def sync(self) -> None:
        if self.faults:
            raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")

    def close(self) -> None:
        if self.faults:
            raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")
        self.closed = True


class FakeDevice:
    current_in: ClassVar[set[int]] = set()
    streams: ClassVar[list[FakeStream]] = []
    faults = False

    def __init__(self, ordinal: int) -> None:
        self.default_stream = types.SimpleNamespace(handle="legacy-stream")

    def set_current(self) -> None:
        FakeDevice.current_in.add(threading.get_ident())

    def create_stream(self, obj: Any = None, options: Any = None) -> FakeStream:
        FakeDevice.streams.append(FakeStream(options, faults=FakeDevice.faults))
        return FakeDevice.streams[-1]


class FakeObjectCode:
    def __init__(self, kind: str, payload: Any) -> None:
        self.kind = kind

    @classmethod
    def from_cubin(cls, module: bytes, *, name: str = "") -> FakeObjectCode:
        return cls("cubin", module)

    @classmethod
    def from_ptx(cls, module: bytes, *, name: str = "") -> FakeObjectCode:
        assert isinstance(module, bytes)
        return cls("ptx", module)

    def get_kernel(self, name: str) -> Any:
        return types.SimpleNamespace(handle=FakeDriver.CUkernel(self.kind))


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Any:
    import cuda.core

    import generator.gpu
    from generator.gpu import GpuProbe

    def install(**options: Any) -> FakeDriver:
        driver = FakeDriver(**options)
        monkeypatch.setattr(device, "_driver", lambda: driver)
        monkeypatch.setattr(device, "_thread", threading.local())
        monkeypatch.setattr(generator.gpu, "probe", lambda: GpuProbe(1, "sm_90", "ok"))
        monkeypatch.setattr(cuda.core, "Device", FakeDevice)
        monkeypatch.setattr(cuda.core, "ObjectCode", FakeObjectCode)
        FakeDevice.current_in, FakeDevice.streams, FakeDevice.faults = set(), [], False
        return driver

    return install


def test_launch_hands_the_driver_the_struct_by_address(fake_cuda: Any) -> None:
    driver = fake_cuda()
    kernel = device.load(b"cubin", KERNEL, 64 * 1024)
    assert driver.calls[-1][1][1:] == (
        FakeDriver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        64 * 1024,
    )
    params = Params(0x1000, 0x2000, 1.5, 77)
    kernel.launch(params, LaunchGeometry(grid=(3, 2, 1), block=(128, 1, 1), smem_bytes=4096))
    assert driver.launched == {
        "function": "function<cubin>",
        "grid": (3, 2, 1),
        "block": (128, 1, 1),
        "smem_bytes": 4096,
        "stream": "legacy-stream",
        "params": (0x1000, 0x2000, 1.5, 77),
    }


def test_a_cubin_that_fails_at_function_lookup_falls_back_to_the_ptx(fake_cuda: Any) -> None:
    driver = fake_cuda(cubin_loads=False)
    kernel = device.load(b"cubin", KERNEL, 1024, ptx=".version 8.0")
    assert kernel.function == "function<ptx>"
    assert driver.calls[-1] == (
        "cuFuncSetAttribute",
        (
            "function<ptx>",
            FakeDriver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            1024,
        ),
    )


def test_no_loadable_binary_names_every_attempt(fake_cuda: Any) -> None:
    fake_cuda(cubin_loads=False)
    with pytest.raises(CudaError, match="cubin: CudaError: cuKernelGetFunction failed with CUDA_"):
        device.load(b"cubin", KERNEL, 1024)


def test_a_launch_from_another_thread_makes_the_context_current_there(fake_cuda: Any) -> None:
    fake_cuda()
    kernel = device.load(b"cubin", KERNEL, 1024)
    geometry = LaunchGeometry(grid=(1, 1, 1), block=(128, 1, 1), smem_bytes=0)
    worker = threading.Thread(target=kernel.launch, args=(Params(0, 0, 1.0, 0), geometry))
    worker.start()
    worker.join()
    assert FakeDevice.current_in == {threading.get_ident(), worker.ident}


def test_time_kernel_rotates_params_on_a_blocking_stream_and_reports_ms(fake_cuda: Any) -> None:
    driver = fake_cuda()
    kernel = device.load(b"cubin", KERNEL, 1024)
    launched: list[int] = []
    original = driver.cuLaunchKernel

    def launch(*args: Any) -> Any:
        status = original(*args)
        launched.append(driver.launched["params"][3])
        return status

    driver.cuLaunchKernel = launch  # type: ignore[method-assign]
    params = [Params(0, 0, 1.0, n) for n in (1, 2, 3)]
    geometry = LaunchGeometry(grid=(1, 1, 1), block=(128, 1, 1), smem_bytes=0)
    times_ms = device.time_kernel(kernel, params, geometry, warmup=2, repetitions=10)
    assert times_ms == [0.25] * 10  # end - start of each launch's own event pair
    assert launched == [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3]  # warmup, then rotated timed runs
    (stream,) = FakeDevice.streams
    # Blocking: ordered after the uploads and memsets issued on the legacy default stream.
    assert stream.options.nonblocking is False and stream.closed


def test_a_fault_while_timing_is_a_launch_error(fake_cuda: Any) -> None:
    fake_cuda()
    FakeDevice.faults = True
    kernel = device.load(b"cubin", KERNEL, 1024)
    geometry = LaunchGeometry(grid=(1, 1, 1), block=(128, 1, 1), smem_bytes=0)
    with pytest.raises(LaunchError, match="ILLEGAL_ADDRESS"):  # not the failed close's error
        device.time_kernel(kernel, [Params(0, 0, 1.0, 1)], geometry, repetitions=10)
