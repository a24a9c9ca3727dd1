"""The CUDA device path: load a cubin, move buffers, launch with a by-value Params struct, time it.

UNVERIFIED on hardware: written against cuda.core 1.2.2 / cuda.bindings 13.5 on a machine without
a GPU. Checked against the installed packages: call signatures, enum names, `(CUresult, value)`
returns, that cuLaunchKernel takes an int as the address of a ready void*[] (its
_HelperKernelParams), that cuda.core's Kernel.handle is a CUkernel (library loading), and that
Event subtraction is in milliseconds. tests/generator/test_device.py runs every function on a GPU
(gpu-marked) and checks the launch's call sequence against a fake driver everywhere.

cuda.core's `launch` cannot pass a ctypes.Structure by value (its argument handler takes
scalars, pointers and Buffers only), so launches go through cuda.bindings.driver.cuLaunchKernel
with `kernelParams` = the address of a one-element void*[] holding the struct's address; the
driver copies the struct at launch, so the array need only live through the call.
"""

from __future__ import annotations

import contextlib
import ctypes
import statistics
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from generator.toolchain import check
from templates.family import LaunchGeometry
from tessera_core.errors import CudaError, LaunchError, NoDeviceError

DEFAULT_WARMUP = 3
MIN_REPETITIONS = 10
# fp16 / bf16 quiet NaN bit patterns: buffers are poisoned so an unwritten output is caught.
NAN_BITS_16 = {"float16": 0x7E00, "bfloat16": 0x7FC0}
NAN_BITS_32 = 0x7FC00000


def _driver() -> Any:
    from cuda.bindings import driver

    return driver


_thread = threading.local()  # the Device made current in this thread


def current_device() -> Any:
    """cuda.core's Device 0 with its primary context current in the calling thread.

    A context is current per thread, and driver calls (cuMemAlloc, cuMemcpy*, cuLaunchKernel)
    fail with CUDA_ERROR_INVALID_CONTEXT without one, so every entry point of this module calls
    this first; set_current runs once per thread. NoDeviceError if there is no GPU.
    """
    device = getattr(_thread, "device", None)
    if device is not None:
        return device
    from generator.gpu import probe

    gpu = probe()
    if not gpu.available:
        raise NoDeviceError(f"no CUDA GPU: {gpu.reason}; use device='emulator' or 'cpu' instead")
    from cuda.core import Device

    device = Device(0)
    device.set_current()
    _thread.device = device
    return device


@dataclass
class DeviceBuffer:
    """Device memory from cuMemAlloc; `ptr` is what a Params struct's pointer fields take."""

    ptr: int
    nbytes: int
    _handle: Any = field(repr=False, default=None)

    def upload(self, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array)
        if data.nbytes > self.nbytes:
            raise ValueError(f"upload of {data.nbytes} bytes into a {self.nbytes}-byte buffer")
        current_device()
        check(
            _driver().cuMemcpyHtoD(self._handle, data.ctypes.data, data.nbytes),
            call="cuMemcpyHtoD",
        )

    def download(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        out = np.empty(tuple(shape), dtype=dtype)
        if out.nbytes > self.nbytes:
            raise ValueError(f"download of {out.nbytes} bytes from a {self.nbytes}-byte buffer")
        current_device()
        check(
            _driver().cuMemcpyDtoH(out.ctypes.data, self._handle, out.nbytes),
            call="cuMemcpyDtoH",
            hint="a previous kernel may have faulted; run it under compute-sanitizer",
        )
        return out

    def poison(self, element_bytes: int = 2, dtype_name: str = "float16") -> None:
        """Fill with NaN so outputs the kernel never writes fail verification.

        cuMemsetD16/D32 run on the legacy default stream, asynchronously to the host: a launch on
        that stream (or a blocking one) is ordered after them.
        """
        current_device()
        driver = _driver()
        if element_bytes == 4:
            status = driver.cuMemsetD32(self._handle, NAN_BITS_32, self.nbytes // 4)
        else:
            status = driver.cuMemsetD16(self._handle, NAN_BITS_16[dtype_name], self.nbytes // 2)
        check(status, call="cuMemsetD16/D32")

    def zero(self) -> None:
        """Fill with zero bits (an accumulator a kernel adds into with atomics), on the legacy
        default stream like `poison`: a launch on that stream is ordered after it."""
        current_device()
        check(_driver().cuMemsetD8(self._handle, 0, self.nbytes), call="cuMemsetD8")

    def free(self) -> None:
        if self._handle is not None:
            current_device()
            check(_driver().cuMemFree(self._handle), call="cuMemFree")
            self._handle = None


def allocate(nbytes: int) -> DeviceBuffer:
    """`nbytes` of device memory on the current device."""
    current_device()
    handle = check(
        _driver().cuMemAlloc(max(1, nbytes)),
        call=f"cuMemAlloc({nbytes})",
        hint="free buffers or shrink the problem",
    )
    return DeviceBuffer(ptr=int(handle), nbytes=nbytes, _handle=handle)


def to_device(array: np.ndarray) -> DeviceBuffer:
    buffer = allocate(array.nbytes)
    buffer.upload(array)
    return buffer


@dataclass
class DeviceKernel:
    """One loaded kernel, ready to launch with up to `smem_bytes` of dynamic shared memory."""

    name: str
    smem_bytes: int
    function: Any  # driver.CUfunction in the current context
    device: Any  # cuda.core Device
    _keepalive: tuple[Any, ...] = field(repr=False, default=())  # ObjectCode, Kernel

    def launch(
        self, params: ctypes.Structure, geometry: LaunchGeometry, stream: Any = None
    ) -> None:
        """Enqueue one launch on `stream` (a cuda.core Stream; default: the device's)."""
        if geometry.smem_bytes > self.smem_bytes:
            raise LaunchError(
                f"needs {geometry.smem_bytes} bytes of dynamic shared memory but was loaded "
                f"for {self.smem_bytes}; load it again with smem_bytes>={geometry.smem_bytes}",
                kernel=self.name,
                grid=geometry.grid,
                block=geometry.block,
            )
        current_device()
        stream = stream if stream is not None else self.device.default_stream
        arguments = (ctypes.c_void_p * 1)(ctypes.addressof(params))
        check(
            _driver().cuLaunchKernel(
                self.function,
                *geometry.grid,
                *geometry.block,
                geometry.smem_bytes,
                stream.handle,
                ctypes.addressof(arguments),
                0,
            ),
            call="cuLaunchKernel",
            error=lambda message: LaunchError(
                message + "; check the grid, block and shared memory against the arch limits",
                kernel=self.name,
                grid=geometry.grid,
                block=geometry.block,
            ),
        )


def _function_of(kernel: Any) -> Any:
    """A CUfunction for cuda.core's Kernel: library-loaded kernels (CUkernel) need a lookup."""
    driver = _driver()
    handle = kernel.handle
    if isinstance(handle, driver.CUkernel):
        return check(driver.cuKernelGetFunction(handle), call="cuKernelGetFunction")
    return handle


def load(
    cubin: bytes, kernel_name: str, smem_bytes: int, *, ptx: str | None = None
) -> DeviceKernel:
    """Load `kernel_name` from `cubin` (else JIT `ptx`), opting in to `smem_bytes` of dynamic smem.

    Raises:
        NoDeviceError: no CUDA GPU.
        CudaError: neither binary loads, or the shared memory opt-in is refused.
    """
    device = current_device()
    from cuda.core import ObjectCode

    errors = []
    candidates = [("cubin", lambda: ObjectCode.from_cubin(cubin, name=kernel_name))]
    if ptx is not None:
        candidates.append(("ptx", lambda: ObjectCode.from_ptx(ptx.encode(), name=kernel_name)))
    for kind, make in candidates:
        try:
            code = make()
            kernel = code.get_kernel(kernel_name)
            function = _function_of(kernel)
            break
        except Exception as exc:  # cuda.core's CUDAError, or CudaError from cuKernelGetFunction
            # With lazy loading (the CUDA 12.2+ default) a cubin for another arch may only fail
            # at cuKernelGetFunction: that too must fall through to the PTX.
            errors.append(f"{kind}: {type(exc).__name__}: {exc}")
    else:
        raise CudaError(
            f"could not load {kernel_name}: {'; '.join(errors)}; compile for this GPU's arch "
            "(generator.toolchain.default_arch()) or pass the PTX"
        )
    driver = _driver()
    check(
        driver.cuFuncSetAttribute(
            function,
            driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem_bytes,
        ),
        call=f"cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES={smem_bytes}) for {kernel_name}",
        hint="the request exceeds this GPU's opt-in shared memory per block; pick a smaller tile",
    )
    return DeviceKernel(
        name=kernel_name,
        smem_bytes=smem_bytes,
        function=function,
        device=device,
        _keepalive=(code, kernel),
    )


def time_kernel(
    kernel: DeviceKernel,
    params_list: Sequence[ctypes.Structure],
    geometry: LaunchGeometry,
    *,
    warmup: int = DEFAULT_WARMUP,
    repetitions: int = 20,
) -> list[float]:
    """Milliseconds of each of `repetitions` launches, timed with CUDA events on a fresh stream.

    Launch i uses `params_list[i % len(params_list)]`: pointing the params at several buffer
    sets whose total exceeds L2 keeps a warm cache from flattering the kernel. The caller
    reports the median (`median_ms`).
    """
    if repetitions < MIN_REPETITIONS:
        raise ValueError(f"repetitions={repetitions}: time at least {MIN_REPETITIONS} launches")
    if not params_list:
        raise ValueError("params_list is empty: give at least one Params struct")
    from cuda.core import EventOptions, StreamOptions

    current_device()
    # cuda.core streams are non-blocking by default; a blocking one is ordered after the
    # uploads and memsets already issued on the legacy default stream.
    stream = kernel.device.create_stream(options=StreamOptions(nonblocking=False))
    timing = EventOptions(timing_enabled=True)
    failed = False
    try:
        for i in range(warmup):
            kernel.launch(params_list[i % len(params_list)], geometry, stream)
        events = []
        for i in range(repetitions):
            start = stream.record(options=timing)
            kernel.launch(params_list[(warmup + i) % len(params_list)], geometry, stream)
            events.append((start, stream.record(options=timing)))
        try:
            stream.sync()
        except Exception as exc:  # cuda.core's CUDAError: the kernel faulted on the device
            failed = True
            raise LaunchError(
                f"failed during timing: {exc}; run it once under compute-sanitizer",
                kernel=kernel.name,
                grid=geometry.grid,
                block=geometry.block,
            ) from exc
        return [float(end - start) for start, end in events]  # Event - Event is in ms
    finally:
        if failed:  # after a fault the close fails too; keep the LaunchError
            with contextlib.suppress(Exception):
                stream.close()
        else:
            stream.close()


def median_ms(times_ms: Sequence[float]) -> float:
    return float(statistics.median(times_ms))
