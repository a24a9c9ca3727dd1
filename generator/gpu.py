"""Probe for a usable CUDA GPU through the driver (cuInit and the device count), never by import."""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuProbe:
    """What the driver says: how many devices, the first one's arch, or why none is usable."""

    device_count: int
    arch: str | None
    reason: str

    @property
    def available(self) -> bool:
        return self.device_count > 0


@functools.cache
def probe() -> GpuProbe:
    """Ask the CUDA driver once per process; any failure means 'no GPU' with the reason kept."""
    try:
        from cuda.bindings import driver
    except ImportError as exc:  # pragma: no cover - cuda-bindings is a hard dependency
        return GpuProbe(0, None, f"cuda-bindings not importable: {exc}")
    try:
        (status,) = driver.cuInit(0)
        if status != driver.CUresult.CUDA_SUCCESS:
            return GpuProbe(0, None, f"cuInit failed: {status.name}")
        status, count = driver.cuDeviceGetCount()
        if status != driver.CUresult.CUDA_SUCCESS or count == 0:
            return GpuProbe(0, None, f"no CUDA device (cuDeviceGetCount: {status.name}, {count})")
        status, dev = driver.cuDeviceGet(0)
        attr = driver.CUdevice_attribute
        _, major = driver.cuDeviceGetAttribute(
            attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev
        )
        _, minor = driver.cuDeviceGetAttribute(
            attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev
        )
        return GpuProbe(count, f"sm_{major}{minor}", "ok")
    except Exception as exc:  # the driver library itself may be absent: no GPU here
        return GpuProbe(0, None, f"CUDA driver unavailable: {type(exc).__name__}: {exc}")
