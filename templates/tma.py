"""TMA tensor maps (CUtensorMap) for 2-D and 3-D tiled loads: one description, two encodings.

`TensorMap2D` holds what cuTensorMapEncodeTiled takes for a row-major 2-D tensor (element size,
global address, inner and outer extents, outer stride, box, swizzle). On a GPU, `encode_driver()`
asks the driver for the 128 opaque bytes; on the emulator, `host_bytes()` packs the same fields in
the layout host/tma.h reads (HostTensorMap). Either result goes into the kernel's `tensor_map_t`
Params field, so device and emulator run from the same parameters.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass
from typing import Any

from tessera_core.errors import CudaError

TENSOR_MAP_BYTES = 128
TENSOR_MAP_ALIGN_BYTES = 64
GLOBAL_ALIGN_BYTES = 16  # cuTensorMapEncodeTiled: address and strides multiples of 16 bytes
MAX_BOX_ELEMS = 256  # each box dimension: 1..256 elements
HOST_TENSOR_MAP_MAGIC = 0x50414D54  # "TMAP", host/tma.h
# host/tma.h HostTensorMap: magic, elem_bytes, base, dims[2], outer stride, box[2], swizzle, pad.
HOST_TENSOR_MAP_FORMAT = "<IIQQQQIIII"
# ... then a 3-D map's outermost dimension: depth, depth stride, box depth, pad (zeros in 2-D).
HOST_TENSOR_MAP_DEPTH_FORMAT = "<QQII"

# Descriptor swizzle codes (sm90_layout.h) and their bytes per swizzled row.
SWIZZLE_CODES = {"none": 0, "128B": 1, "64B": 2, "32B": 3}
SWIZZLE_BYTES = {"none": 16, "128B": 128, "64B": 64, "32B": 32}


class TensorMapBytes(ctypes.Structure):
    """The kernel-side tensor_map_t: 128 bytes, 64-byte aligned inside Params."""

    _pack_ = 8
    _fields_ = [("opaque", ctypes.c_uint64 * 16)]


@dataclass(frozen=True)
class TensorMap2D:
    """A row-major [outer, inner] tensor read in boxes of [box_outer, box_inner] elements."""

    address: int
    elem_bytes: int
    inner: int  # elements per row (contiguous)
    outer: int  # rows
    outer_stride_bytes: int
    box_inner: int
    box_outer: int
    swizzle: str = "128B"

    def __post_init__(self) -> None:
        if self.swizzle not in SWIZZLE_CODES:
            raise ValueError(
                f"swizzle={self.swizzle!r}: expected one of {', '.join(SWIZZLE_CODES)}"
            )
        if self.elem_bytes not in (1, 2, 4):
            raise ValueError(f"elem_bytes={self.elem_bytes}: expected 1, 2 or 4")
        if self.address % GLOBAL_ALIGN_BYTES:
            raise ValueError(f"address={self.address:#x}: must be 16-byte aligned for TMA")
        if self.outer_stride_bytes % GLOBAL_ALIGN_BYTES:
            raise ValueError(
                f"outer_stride_bytes={self.outer_stride_bytes}: must be a multiple of 16 for TMA "
                "(pad rows to a multiple of 16 bytes)"
            )
        if self.inner < 1 or self.outer < 1:
            raise ValueError(f"extents {self.inner}x{self.outer}: must be positive")
        for name in ("box_inner", "box_outer"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_BOX_ELEMS:
                raise ValueError(f"{name}={value}: must be in 1..{MAX_BOX_ELEMS}")
        row_bytes = self.box_inner * self.elem_bytes
        if row_bytes % 16:
            raise ValueError(f"box row of {row_bytes} bytes: must be a multiple of 16")
        if self.swizzle != "none" and row_bytes != SWIZZLE_BYTES[self.swizzle]:
            raise ValueError(
                f"box row of {row_bytes} bytes with swizzle {self.swizzle}: a swizzled box row "
                f"is exactly {SWIZZLE_BYTES[self.swizzle]} bytes"
            )

    @property
    def box_bytes(self) -> int:
        """Bytes one load writes to shared memory (and completes on its barrier)."""
        return self.box_inner * self.box_outer * self.elem_bytes

    def host_bytes(self) -> TensorMapBytes:
        """The emulator's encoding (host/tma.h HostTensorMap)."""
        packed = struct.pack(
            HOST_TENSOR_MAP_FORMAT,
            HOST_TENSOR_MAP_MAGIC,
            self.elem_bytes,
            self.address,
            self.inner,
            self.outer,
            self.outer_stride_bytes,
            self.box_inner,
            self.box_outer,
            SWIZZLE_CODES[self.swizzle],
            0,
        )
        out = TensorMapBytes()
        ctypes.memmove(ctypes.addressof(out), packed, len(packed))
        return out

    def encode_driver(self) -> TensorMapBytes:
        """cuTensorMapEncodeTiled on the present GPU's driver (needs a CUDA driver)."""
        return encode_tiled(
            self,
            [self.inner, self.outer],
            [self.outer_stride_bytes],
            [self.box_inner, self.box_outer],
        )


def encode_tiled(
    tensor_map: TensorMap2D, dims: list[int], strides_bytes: list[int], box: list[int]
) -> TensorMapBytes:
    """cuTensorMapEncodeTiled of rank len(dims) for `tensor_map`'s element size and swizzle."""
    from cuda.bindings import driver

    dtype = {
        1: driver.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_UINT8,
        2: driver.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        4: driver.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
    }[tensor_map.elem_bytes]
    swizzle = {
        "none": driver.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_NONE,
        "128B": driver.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_128B,
        "64B": driver.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_64B,
        "32B": driver.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_32B,
    }[tensor_map.swizzle]
    result: Any = driver.cuTensorMapEncodeTiled(
        dtype,
        len(dims),
        tensor_map.address,
        [driver.cuuint64_t(x) for x in dims],
        [driver.cuuint64_t(x) for x in strides_bytes],
        [driver.cuuint32_t(x) for x in box],
        [driver.cuuint32_t(1)] * len(dims),
        driver.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE,
        swizzle,
        driver.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
        driver.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
    )
    status, encoded = result[0], result[1]
    if int(status) != 0:
        raise CudaError(
            f"cuTensorMapEncodeTiled failed ({status}) for {tensor_map}; check the alignment and "
            "extent rules in templates/tma.py"
        )
    out = TensorMapBytes()
    for i, word in enumerate(encoded.opaque):  # 16 x 64-bit words
        out.opaque[i] = int(word)
    return out


@dataclass(frozen=True)
class TensorMap3D(TensorMap2D):
    """A row-major [depth, outer, inner] tensor read in boxes of [1, box_outer, box_inner].

    Out-of-bounds zero fill applies per dimension, so a box hanging over the end of one
    [outer, inner] matrix (one attention head) reads zeros, not the next matrix's rows.
    """

    depth: int = 1
    depth_stride_bytes: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.depth < 1:
            raise ValueError(f"depth={self.depth}: must be positive")
        if self.depth_stride_bytes % GLOBAL_ALIGN_BYTES or self.depth_stride_bytes < 0:
            raise ValueError(
                f"depth_stride_bytes={self.depth_stride_bytes}: must be a non-negative multiple "
                "of 16 for TMA"
            )

    def host_bytes(self) -> TensorMapBytes:
        """The emulator's encoding: the 2-D fields, then depth, its stride and a box depth of 1."""
        out = super().host_bytes()
        packed = struct.pack(
            HOST_TENSOR_MAP_DEPTH_FORMAT, self.depth, self.depth_stride_bytes, 1, 0
        )
        offset = struct.calcsize(HOST_TENSOR_MAP_FORMAT)
        ctypes.memmove(ctypes.addressof(out) + offset, packed, len(packed))
        return out

    def encode_driver(self) -> TensorMapBytes:
        """cuTensorMapEncodeTiled of rank 3 on the present GPU's driver (needs a CUDA driver)."""
        return encode_tiled(
            self,
            [self.inner, self.outer, self.depth],
            [self.outer_stride_bytes, self.depth_stride_bytes],
            [self.box_inner, self.box_outer, 1],
        )
