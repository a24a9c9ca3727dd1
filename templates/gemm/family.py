"""The gemm family object: Params fields, launch geometry and template variables."""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

from templates.family import (
    ParamField,
    SpaceFamily,
    checked_pointers,
    params_structure,
)
from templates.gemm import space
from tessera_core.types import Problem, TileConfig

PARAMS_FIELDS: tuple[ParamField, ...] = (
    ParamField(name="a", c_type="const elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="b", c_type="const elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="c", c_type="elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="m", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="n", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="k", c_type="int", ctype=ctypes.c_int32),
)
POINTER_NAMES = ("a", "b", "c")


class GemmFamily(SpaceFamily):
    """C[M,N] = op(A) @ op(B), fp32 accumulation, output in the input dtype; the problem's
    layout (nn, nt, tn, tt) says which operand is stored transposed (GemmProblem)."""

    name = "gemm"
    op = "gemm"
    kernel_name = "tessera_gemm"
    template_path = "gemm/gemm.cu.j2"
    tiles = space  # grid, smem_bytes, default_config (SpaceFamily); before the rebinding
    space = space.SPACE
    params_fields = PARAMS_FIELDS
    params_type = params_structure("GemmParams", PARAMS_FIELDS)

    def template_context(
        self, problem: Problem, config: TileConfig, *, specialized: bool
    ) -> Mapping[str, Any]:
        p = space.as_problem(problem)
        layout = space.warp_layout(config)
        if layout is None:
            raise ValueError(f"gemm config {config}: no warp layout tiles the block")
        return {
            "kernel_name": self.kernel_name,
            "params_fields": self.params_fields,
            "specialized": specialized,
            "dtype": p.dtype,
            "layout": p.layout,
            "m": p.m,
            "n": p.n,
            "k": p.k,
            **config.to_dict(),  # block_m, block_n, block_k, num_warps, num_stages, options
            "group_m": space.group_m(config),  # its default where the config leaves it out
            "warps_m": layout[0],
            "warps_n": layout[1],
            "row_pad_elems": space.ROW_PAD_ELEMS,
            "smem_bytes": self.smem_bytes(problem, config),
        }

    def make_params(
        self, problem: Problem, *, pointers: Mapping[str, int], scale: float | None = None
    ) -> ctypes.Structure:
        """Params by value. Pointers: a, b, c (as stored: a [K, M] and b [N, K] when
        transposed). `scale` is not used by gemm and must be None."""
        p = space.as_problem(problem)
        if scale is not None:
            raise ValueError("gemm make_params: scale applies to attention only")
        checked_pointers(self.name, pointers, POINTER_NAMES)
        return self.params_type(**{n: pointers[n] for n in POINTER_NAMES}, m=p.m, n=p.n, k=p.k)


FAMILY = GemmFamily()
