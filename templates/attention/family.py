"""The attention_fwd family object: Params fields, launch geometry and template variables."""

from __future__ import annotations

import ctypes
import math
from collections.abc import Mapping
from typing import Any

from templates.attention import space
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
    ParamField(name="o", c_type="elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="lse", c_type="float*", ctype=ctypes.c_void_p),
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
    ParamField(name="cu_seqlens_q", c_type="const int*", ctype=ctypes.c_void_p),
    ParamField(name="cu_seqlens_k", c_type="const int*", ctype=ctypes.c_void_p),
)
POINTER_NAMES = ("q", "k", "v", "o", "lse")
ALIBI_POINTER = "alibi_slopes"  # float32 [heads] or [batch, heads], with problem.alibi
CU_SEQLENS = ("cu_seqlens_q", "cu_seqlens_k")  # int32 [batch + 1] each, with problem.varlen
# The kernel moves Q, K, V (cp.async) and O (vector stores) in 16-byte chunks and has no scalar
# fallback: a misaligned base faults on the GPU (a sticky error that ends the CUDA context).
POINTER_ALIGN_BYTES = {"q": 16, "k": 16, "v": 16, "o": 16, "lse": 4}


class AttentionFamily(SpaceFamily):
    """FlashAttention-2-style forward attention (GQA, windows, softcap, ALiBi, two layouts)."""

    name = "attention_fwd"
    op = "attention"
    kernel_name = "tessera_attention_fwd"
    template_path = "attention/attention_fwd.cu.j2"
    tiles = space  # grid, smem_bytes, default_config (SpaceFamily); before the rebinding
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
            "head_dim_pad": space.padded_head_dim(p.head_dim),
            "is_gqa": p.kv_heads != p.heads,
            "has_window": p.has_window,
            "has_softcap": p.softcap > 0.0,
            "has_alibi": p.alibi != "none",
            "layout": p.layout,
            "varlen": p.varlen,
            "seq_q": p.seq_q,
            "seq_kv": p.seq_kv,
            **config.to_dict(),  # block_m, block_n, block_k, num_warps, num_stages, q_in_regs
            "q_in_regs": int(space.q_in_regs(config)),
            "row_pad_elems": space.ROW_PAD_ELEMS,
            "smem_bytes": self.smem_bytes(problem, config),
        }

    def make_params(
        self, problem: Problem, *, pointers: Mapping[str, int], scale: float | None = None
    ) -> ctypes.Structure:
        """Params by value; `scale` defaults to 1/sqrt(head_dim). Pointers: q, k, v, o, lse,
        alibi_slopes (float32) when the problem has ALiBi, cu_seqlens_q and cu_seqlens_k
        (int32) when it is varlen."""
        p = space.as_problem(problem)
        softmax_scale = default_scale(p.head_dim) if scale is None else float(scale)
        if not softmax_scale > 0.0:
            raise ValueError(f"softmax scale={softmax_scale}: must be positive")
        names = POINTER_NAMES + ((ALIBI_POINTER,) if p.alibi != "none" else ())
        names += CU_SEQLENS if p.varlen else ()
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


def tensor_shapes(
    problem: Problem, *, totals: tuple[int, int] | None = None
) -> dict[str, tuple[int, ...]]:
    """The shape of each tensor of a launch: q, k, v, o (by layout), lse and, with ALiBi,
    alibi_slopes; a varlen problem's take `totals` (total_q, total_kv), packed rows."""
    p = space.as_problem(problem)
    b, h, hkv, d = p.batch, p.heads, p.kv_heads, p.head_dim
    q: tuple[int, ...]
    kv: tuple[int, ...]
    lse: tuple[int, ...]
    if p.varlen:
        if totals is None:
            raise ValueError("a varlen problem's tensor shapes need totals=(total_q, total_kv)")
        total_q, total_kv = totals
        q, kv, lse = (total_q, h, d), (total_kv, hkv, d), (h, total_q)
    elif p.layout == "bshd":
        q, kv, lse = (b, p.seq_q, h, d), (b, p.seq_kv, hkv, d), (b, h, p.seq_q)
    else:
        q, kv, lse = (b, h, p.seq_q, d), (b, hkv, p.seq_kv, d), (b, h, p.seq_q)
    shapes: dict[str, tuple[int, ...]] = {"q": q, "k": kv, "v": kv, "o": q, "lse": lse}
    if p.alibi != "none":
        shapes[ALIBI_POINTER] = (b, h) if p.alibi == "batch_heads" else (h,)
    return shapes


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)


FAMILY = AttentionFamily()
