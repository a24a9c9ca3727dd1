"""The attention_fwd family object: Params fields, launch geometry and template variables."""

from __future__ import annotations

import ctypes
import math
from collections.abc import Mapping
from typing import Any

from templates.attention import space
from templates.family import LaunchGeometry, ParamField, checked_pointers, params_structure
from tessera_core.types import Problem, TileConfig

PARAMS_FIELDS: tuple[ParamField, ...] = (
    ParamField(name="q", c_type="const elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="k", c_type="const elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="v", c_type="const elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="o", c_type="elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="lse", c_type="float*", ctype=ctypes.c_void_p),
    ParamField(name="seq_q", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="seq_kv", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="softmax_scale", c_type="float", ctype=ctypes.c_float),
)
POINTER_NAMES = ("q", "k", "v", "o", "lse")
# The kernel moves Q, K, V (cp.async) and O (vector stores) in 16-byte chunks and has no scalar
# fallback: a misaligned base faults on the GPU (a sticky error that ends the CUDA context).
POINTER_ALIGN_BYTES = {"q": 16, "k": 16, "v": 16, "o": 16, "lse": 4}


class AttentionFamily:
    """FlashAttention-2-style forward attention over [batch, heads, seq, head_dim] tensors."""

    name = "attention_fwd"
    op = "attention"
    kernel_name = "tessera_attention_fwd"
    template_path = "attention/attention_fwd.cu.j2"
    space = space.SPACE
    params_fields = PARAMS_FIELDS
    params_type = params_structure("AttentionParams", PARAMS_FIELDS)

    def template_context(
        self, problem: Problem, config: TileConfig, *, specialized: bool
    ) -> Mapping[str, Any]:
        p = space.as_problem(problem)
        return {
            "kernel_name": self.kernel_name,
            "params_fields": self.params_fields,
            "specialized": specialized,
            "dtype": p.dtype,
            "causal": p.causal,
            "head_dim": p.head_dim,
            "seq_q": p.seq_q,
            "seq_kv": p.seq_kv,
            **config.to_dict(),  # block_m, block_n, block_k, num_warps, num_stages, q_in_regs
            "q_in_regs": int(space.q_in_regs(config)),
            "row_pad_elems": space.ROW_PAD_ELEMS,
            "smem_bytes": self.smem_bytes(problem, config),
        }

    def launch_geometry(self, problem: Problem, config: TileConfig) -> LaunchGeometry:
        """Grid (query blocks, heads, batch); one block of num_warps warps per block_m rows."""
        return LaunchGeometry(
            grid=space.grid(problem, config),
            block=(config.num_threads, 1, 1),
            smem_bytes=self.smem_bytes(problem, config),
        )

    def smem_bytes(self, problem: Problem, config: TileConfig) -> int:
        return space.smem_bytes(problem, config)

    def default_config(self, problem: Problem, arch: str) -> TileConfig:
        return space.default_config(problem, arch)

    def make_params(
        self, problem: Problem, *, pointers: Mapping[str, int], scale: float | None = None
    ) -> ctypes.Structure:
        """Params by value; `scale` defaults to 1/sqrt(head_dim). Pointers: q, k, v, o, lse."""
        p = space.as_problem(problem)
        softmax_scale = default_scale(p.head_dim) if scale is None else float(scale)
        if not softmax_scale > 0.0:
            raise ValueError(f"softmax scale={softmax_scale}: must be positive")
        checked = checked_pointers(self.name, pointers, POINTER_NAMES, POINTER_ALIGN_BYTES)
        return self.params_type(
            **checked,
            seq_q=p.seq_q,
            seq_kv=p.seq_kv,
            softmax_scale=softmax_scale,
        )


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)


FAMILY = AttentionFamily()
