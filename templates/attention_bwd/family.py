"""The attention_bwd family object: Params fields, launch geometry and template variables."""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

from templates.attention.family import default_scale
from templates.attention_bwd import space
from templates.family import (
    ParamField,
    SpaceFamily,
    checked_pointers,
    params_structure,
)
from tessera_core.types import Problem, TileConfig

PARAMS_FIELDS: tuple[ParamField, ...] = (
    ParamField(name="q", c_type="const elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="k", c_type="const elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="v", c_type="const elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="o", c_type="const elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="lse", c_type="const float*", ctype=ctypes.c_void_p),
    ParamField(name="dout", c_type="const elem_t*", ctype=ctypes.c_void_p),  # dO
    ParamField(name="dq", c_type="float*", ctype=ctypes.c_void_p),  # fp32 (accumulator)
    ParamField(name="dk", c_type="elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="dv", c_type="elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="seq_q", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="seq_kv", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="softmax_scale", c_type="float", ctype=ctypes.c_float),
    # The variants' run-time values (read only by kernels compiled with the variant).
    ParamField(name="heads_kv", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="window_left", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="window_right", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="softcap", c_type="float", ctype=ctypes.c_float),
    ParamField(name="alibi_slopes", c_type="const float*", ctype=ctypes.c_void_p),
    ParamField(name="alibi_batch_stride", c_type="int", ctype=ctypes.c_int32),
)
POINTER_NAMES = ("q", "k", "v", "o", "lse", "dout", "dq", "dk", "dv")
ALIBI_POINTER = "alibi_slopes"  # float32 [heads] or [batch, heads], with problem.alibi
# Q, K, V and dO move by cp.async in 16-byte chunks; dK, dV are stored as 4-byte pairs; O, LSE
# and dQ are read or written one element at a time.
POINTER_ALIGN_BYTES = {
    "q": 16,
    "k": 16,
    "v": 16,
    "dout": 16,
    "o": 2,
    "lse": 4,
    "dq": 4,
    "dk": 4,
    "dv": 4,
}


class AttentionBackwardFamily(SpaceFamily):
    """FlashAttention-2's backward with the forward's variants (GQA, windows, softcap, ALiBi,
    layouts bhsd and bshd, head_dim any multiple of 8 the space admits).

    With the option deterministic=0 the kernel adds into dQ with fp32 atomics, so dQ must be
    zero-filled before the launch; with deterministic=1 it writes every dQ element once.
    """

    name = "attention_bwd"
    op = "attention_bwd"
    kernel_name = "tessera_attention_bwd"
    template_path = "attention_bwd/attention_bwd.cu.j2"
    tiles = space  # grid, smem_bytes, default_config (SpaceFamily); before the rebinding
    space = space.SPACE
    params_fields = PARAMS_FIELDS
    params_type = params_structure("AttentionBackwardParams", PARAMS_FIELDS)

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
            "head_dim_pad": space.padded_head_dim(p.head_dim),
            "d_split": space.d_split(p),
            "is_gqa": p.kv_heads != p.heads,
            "has_window": p.has_window,
            "has_softcap": p.softcap > 0.0,
            "has_alibi": p.alibi != "none",
            "layout": p.layout,
            "seq_q": p.seq_q,
            "seq_kv": p.seq_kv,
            "block_m": config.block_m,
            "block_n": config.block_n,
            "num_warps": config.num_warps,
            "num_stages": config.num_stages,
            "deterministic": space.deterministic(config),
            "row_pad_elems": space.ROW_PAD_ELEMS,
            "floats_offset_bytes": space.floats_offset_bytes(problem, config),
            "smem_bytes": self.smem_bytes(problem, config),
        }

    def make_params(
        self, problem: Problem, *, pointers: Mapping[str, int], scale: float | None = None
    ) -> ctypes.Structure:
        """Params by value; `scale` defaults to 1/sqrt(head_dim).

        Pointers: q, k, v, o, lse, dout (dO), dq (fp32), dk, dv, and alibi_slopes (float32)
        when the problem has ALiBi.
        """
        p = space.as_problem(problem)
        softmax_scale = default_scale(p.head_dim) if scale is None else float(scale)
        if not softmax_scale > 0.0:
            raise ValueError(f"softmax scale={softmax_scale}: must be positive")
        names = POINTER_NAMES + ((ALIBI_POINTER,) if p.alibi != "none" else ())
        align = {**POINTER_ALIGN_BYTES, **dict.fromkeys(names[len(POINTER_NAMES) :], 4)}
        checked = checked_pointers(self.name, pointers, names, align)
        return self.params_type(
            **checked,
            seq_q=p.seq_q,
            seq_kv=p.seq_kv,
            softmax_scale=softmax_scale,
            heads_kv=p.kv_heads,
            window_left=p.window_left,
            window_right=p.window_right,
            softcap=p.softcap,
            alibi_batch_stride=p.heads if p.alibi == "batch_heads" else 0,
        )


FAMILY = AttentionBackwardFamily()
