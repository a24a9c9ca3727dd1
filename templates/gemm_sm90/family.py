"""The gemm_sm90 family object: Params (with TMA tensor maps), launch geometry, template vars."""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any, Literal

from templates.family import (
    ParamField,
    SpaceFamily,
    checked_pointers,
    params_structure,
)
from templates.gemm_sm90 import space
from templates.tma import TensorMap2D, TensorMapBytes
from tessera_core.types import ELEM_BYTES, GemmProblem, Problem, TileConfig

# The tensor maps come first: tensor_map_t is 64-byte aligned, and at offset 0 and 128 the C
# struct and its ctypes mirror agree without padding rules.
PARAMS_FIELDS: tuple[ParamField, ...] = (
    ParamField(name="map_a", c_type="tessera::tensor_map_t", ctype=TensorMapBytes),
    ParamField(name="map_b", c_type="tessera::tensor_map_t", ctype=TensorMapBytes),
    ParamField(name="c", c_type="out_t*", ctype=ctypes.c_void_p),
    ParamField(name="m", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="n", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="k", c_type="int", ctype=ctypes.c_int32),
    # Multiplies the fp32 accumulators before C is rounded: FP8's per-tensor descales
    # (scale_a * scale_b); 1 unless make_params is given `scale`.
    ParamField(name="alpha", c_type="float", ctype=ctypes.c_float),
)
POINTER_NAMES = ("a", "b", "c")
TensorMapEncoding = Literal["host", "driver"]


def tensor_maps(problem: GemmProblem, a: int, b: int) -> tuple[TensorMap2D, TensorMap2D]:
    """The TMA descriptions of A [M, K] (boxes of 64 rows x 128 bytes of k) and of B: [K, N]
    in 64 x 64 boxes of n for 16-bit inputs, B^T [N, K] in A's boxes for e4m3 (FP8 wgmma
    reads B K-major only).

    One description serves both encodings: TensorMap2D.host_bytes() for the emulator and
    TensorMap2D.encode_driver() (cuTensorMapEncodeTiled) on a GPU.
    """
    elem = ELEM_BYTES[problem.dtype]
    box = space.TMA_BOX
    row_k = space.ROW_BYTES // elem
    map_a = TensorMap2D(
        address=a, elem_bytes=elem, inner=problem.k, outer=problem.m,
        outer_stride_bytes=problem.k * elem, box_inner=row_k, box_outer=box, swizzle="128B",
    )  # fmt: skip
    if problem.dtype == "e4m3":
        map_b = TensorMap2D(
            address=b, elem_bytes=elem, inner=problem.k, outer=problem.n,
            outer_stride_bytes=problem.k * elem, box_inner=row_k, box_outer=box,
            swizzle="128B",
        )  # fmt: skip
        return map_a, map_b
    map_b = TensorMap2D(
        address=b, elem_bytes=elem, inner=problem.n, outer=problem.k,
        outer_stride_bytes=problem.n * elem, box_inner=box, box_outer=box, swizzle="128B",
    )  # fmt: skip
    return map_a, map_b


class GemmSm90Family(SpaceFamily):
    """C[M,N] = alpha * A[M,K] @ B[K,N] with TMA and wgmma; fp32 accumulation; output in the
    input dtype, or fp16/bf16 for e4m3 inputs (whose B arrives transposed, [N, K])."""

    name = "gemm_sm90"
    op = "gemm"
    kernel_name = "tessera_gemm_sm90"
    template_path = "gemm_sm90/gemm_sm90.cu.j2"
    tiles = space  # grid, smem_bytes, default_config (SpaceFamily); before the rebinding
    space = space.SPACE
    params_fields = PARAMS_FIELDS
    params_type = params_structure("GemmSm90Params", PARAMS_FIELDS)

    def template_context(
        self, problem: Problem, config: TileConfig, *, specialized: bool
    ) -> Mapping[str, Any]:
        p = space.as_problem(problem)
        return {
            "kernel_name": self.kernel_name,
            "params_fields": self.params_fields,
            "specialized": specialized,
            "dtype": p.dtype,
            "out_dtype": p.output_dtype,
            "m": p.m,
            "n": p.n,
            "k": p.k,
            **config.to_dict(),  # block_m, block_n, block_k, num_warps, num_stages
            "group_m": space.GROUP_M,
        }

    def make_params(
        self,
        problem: Problem,
        *,
        pointers: Mapping[str, int],
        scale: float | None = None,
        tensor_map_encoding: TensorMapEncoding = "host",
    ) -> ctypes.Structure:
        """Params by value. Pointers: a, b (B^T [N, K] for e4m3), c. `scale` multiplies the
        product (FP8 descales, scale_a * scale_b; default 1). The tensor maps are encoded for
        the emulator ("host", the default: what generator.emulator runs) or by the CUDA driver
        ("driver": a GPU launch must pass it)."""
        p = space.as_problem(problem)
        checked_pointers(self.name, pointers, POINTER_NAMES)
        if tensor_map_encoding not in ("host", "driver"):
            raise ValueError(
                f"tensor_map_encoding={tensor_map_encoding!r}: expected 'host' or 'driver'"
            )
        map_a, map_b = tensor_maps(p, pointers["a"], pointers["b"])
        if tensor_map_encoding == "host":
            encoded = (map_a.host_bytes(), map_b.host_bytes())
        else:
            encoded = (map_a.encode_driver(), map_b.encode_driver())
        alpha = 1.0 if scale is None else float(scale)
        return self.params_type(
            map_a=encoded[0], map_b=encoded[1], c=pointers["c"], m=p.m, n=p.n, k=p.k, alpha=alpha
        )


FAMILY = GemmSm90Family()
