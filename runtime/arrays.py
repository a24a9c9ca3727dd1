"""Array adapters: dtype names of host (NumPy) and device (CUDA array interface, DLPack) arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from tessera_core.types import DType

_DTYPES: tuple[tuple[DType, np.dtype], ...] = (
    ("fp16", np.dtype(np.float16)),
    ("bf16", np.dtype(ml_dtypes.bfloat16)),
)
NUMPY_DTYPES: dict[str, np.dtype] = dict(_DTYPES)
DTYPE_NAMES: dict[np.dtype, DType] = {dtype: name for name, dtype in _DTYPES}
_DLPACK_CUDA_DEVICES = (2, 13)  # kDLCUDA, kDLCUDAManaged


def dtype_name(dtype: np.dtype) -> DType | None:
    """'fp16' / 'bf16' for a supported NumPy dtype, else None."""
    return DTYPE_NAMES.get(dtype)


@dataclass(frozen=True)
class DeviceArray:
    """A GPU array used in place: its pointer, shape, dtype name and whether it is row-major."""

    source: Any
    pointer: int
    shape: tuple[int, ...]
    dtype: DType | None
    dtype_text: str
    contiguous: bool


def is_device_array(obj: object) -> bool:
    """True for objects living on a CUDA device (torch or cupy tensors, cuda.core buffers...)."""
    if hasattr(obj, "__cuda_array_interface__"):
        return True
    dlpack_device = getattr(obj, "__dlpack_device__", None)
    if dlpack_device is None:
        return False
    try:
        device_type, _ = dlpack_device()
    except Exception:
        return False
    return int(device_type) in _DLPACK_CUDA_DEVICES


def device_array(obj: Any) -> DeviceArray:
    """Describe a device array without copying it (DLPack first, then the CUDA array interface)."""
    # cuda.core's StridedMemoryView reads both protocols; stream_ptr=-1 skips stream ordering,
    # the caller owns the producer stream as with any in-place CUDA array.
    from cuda.core.utils import StridedMemoryView

    view = StridedMemoryView.from_any_interface(obj, stream_ptr=-1)
    shape = tuple(int(d) for d in view.shape)
    name: DType | None = None
    dtype = view.dtype
    if dtype is not None:
        name = DTYPE_NAMES.get(np.dtype(dtype))
    strides = view.strides  # in elements; None when row-major
    contiguous = strides is None or tuple(strides) == _row_major_strides(shape)
    return DeviceArray(obj, int(view.ptr), shape, name, str(dtype), contiguous)


def _row_major_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides = []
    step = 1
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))
