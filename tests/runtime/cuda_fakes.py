"""Fakes of generator.device for the CUDA paths' CPU tests: device memory is poisoned host
memory, a 'loaded kernel' runs its source on the host emulator over that memory, and CUDA
arrays are host buffers behind __cuda_array_interface__ (runtime.arrays.device_array is
replaced to describe them)."""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest

from generator.host_build import SCHEDULES, build_host_library
from runtime.arrays import DTYPE_NAMES, DeviceArray

POISON = 0xFF  # fresh fake device memory: NaN floats, -1 counters (a missed zeroing shows)


class HostBuffer:
    """Fake device memory: 256-byte aligned host bytes, poisoned when allocated; `caller`
    marks the memory of a caller's CUDA array (never the runtime's to free)."""

    def __init__(self, nbytes: int, memory: list[HostBuffer], *, caller: bool = False) -> None:
        self._raw = np.full(nbytes + 256, POISON, dtype=np.uint8)
        offset = (-self._raw.ctypes.data) % 256
        self.view = self._raw[offset : offset + nbytes]
        self.ptr, self.nbytes, self.freed, self.zeroed = self.view.ctypes.data, nbytes, False, False
        self.caller = caller
        memory.append(self)

    def upload(self, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        assert data.nbytes <= self.nbytes
        self.view[: data.nbytes] = data

    def download(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self.view[:count].copy().view(dtype).reshape(shape)

    def zero(self) -> None:
        self.view[:] = 0
        self.zeroed = True

    def free(self) -> None:
        self.freed = True


class EmulatedLaunch:
    """A 'loaded kernel' whose launch runs `source` on the host emulator over the fake memory."""

    def __init__(self, source: str, kernel_name: str, memory: list[HostBuffer]) -> None:
        self._kernel = build_host_library(source).kernel(kernel_name)
        self._memory = memory
        self.device = types.SimpleNamespace(sync=lambda: None)
        self.geometries: list[Any] = []

    def launch(self, params: Any, geometry: Any) -> None:
        self.geometries.append(geometry)
        self._kernel.launch(
            params, grid=geometry.grid, block=geometry.block, smem_bytes=geometry.smem_bytes,
            schedule=SCHEDULES[0],
            regions=[(b.ptr, b.nbytes) for b in self._memory if not b.freed],
        )  # fmt: skip


def fake_device(monkeypatch: pytest.MonkeyPatch) -> list[HostBuffer]:
    import generator

    memory: list[HostBuffer] = []

    def to_device(array: np.ndarray) -> HostBuffer:
        buffer = HostBuffer(array.nbytes, memory)
        buffer.upload(array)
        return buffer

    def load(cubin: bytes, kernel_name: str, smem_bytes: int, *, ptx: str | None = None) -> Any:
        return EmulatedLaunch(cubin.decode(), kernel_name, memory)  # the fake 'cubin' is source

    fake = types.SimpleNamespace(
        allocate=lambda nbytes: HostBuffer(nbytes, memory), to_device=to_device, load=load
    )
    monkeypatch.setattr(generator, "device", fake, raising=False)
    return memory


class FakeCudaArray:
    """A caller's CUDA array: a HostBuffer behind the CUDA array interface."""

    def __init__(self, array: np.ndarray, memory: list[HostBuffer]) -> None:
        self.shape, self.dtype = array.shape, array.dtype
        self.buffer = HostBuffer(max(array.nbytes, 1), memory, caller=True)
        self.buffer.upload(array)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.buffer.ptr, False),
                "version": 3, "strides": None}  # fmt: skip

    def host(self) -> np.ndarray:
        return self.buffer.download(self.shape, self.dtype)


def fake_cuda_arrays(monkeypatch: pytest.MonkeyPatch, memory: list[HostBuffer]) -> None:
    """device_array, to_host, copy_into and to_device_output for FakeCudaArrays and the
    runtime's DeviceOutputs over HostBuffers."""
    from runtime import cuda_backend, cuda_decode, validate_decode

    def describe(x: Any) -> DeviceArray:
        if isinstance(x, FakeCudaArray):
            shape, dtype, ptr = x.shape, x.dtype, x.buffer.ptr
        else:  # a DeviceOutput
            shape, dtype, ptr = x.shape, x.dtype, x.buffer.ptr
        return DeviceArray(x, ptr, tuple(shape), DTYPE_NAMES.get(np.dtype(dtype)), str(dtype), True)

    def to_host(x: Any) -> np.ndarray:
        return x.host() if isinstance(x, FakeCudaArray) else x.numpy()

    def copy_into(target: Any, array: np.ndarray) -> None:
        target.buffer.upload(array)

    def to_device_output(array: np.ndarray) -> Any:
        buffer = HostBuffer(array.nbytes, memory)
        buffer.upload(array)
        return cuda_backend.DeviceOutput(buffer, array.shape, array.dtype)

    for module in (validate_decode, cuda_decode):
        monkeypatch.setattr(module, "device_array", describe)
    for module in (cuda_backend, cuda_decode):
        monkeypatch.setattr(module, "to_host", to_host)
    monkeypatch.setattr(cuda_decode, "copy_into", copy_into)
    monkeypatch.setattr(cuda_decode, "to_device_output", to_device_output)
