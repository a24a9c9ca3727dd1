"""The attention_decode family object: Params fields, launch geometry and template variables."""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from templates.attention.family import default_scale
from templates.attention_decode import space
from templates.family import (
    ParamField,
    SpaceFamily,
    checked_pointers,
    params_structure,
)
from tessera_core.hardware import ceil_div
from tessera_core.types import Problem, TileConfig

PARAMS_FIELDS: tuple[ParamField, ...] = (
    ParamField(name="q", c_type="const elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="k_cache", c_type="elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="v_cache", c_type="elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="k_new", c_type="const elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="v_new", c_type="const elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="cache_seqlens", c_type="const int*", ctype=ctypes.c_void_p),
    ParamField(name="block_table", c_type="const int*", ctype=ctypes.c_void_p),
    ParamField(name="o", c_type="elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="lse", c_type="float*", ctype=ctypes.c_void_p),
    ParamField(name="o_part", c_type="float*", ctype=ctypes.c_void_p),
    ParamField(name="lse_part", c_type="float*", ctype=ctypes.c_void_p),
    ParamField(name="counters", c_type="int*", ctype=ctypes.c_void_p),
    ParamField(name="alibi_slopes", c_type="const float*", ctype=ctypes.c_void_p),
    ParamField(name="heads_q", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="heads_kv", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="seq_q", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="seq_new", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="page_size", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="max_pages", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="cache_capacity", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="window_left", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="window_right", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="softmax_scale", c_type="float", ctype=ctypes.c_float),
    ParamField(name="softcap", c_type="float", ctype=ctypes.c_float),
    ParamField(name="alibi_batch_stride", c_type="int", ctype=ctypes.c_int32),
)
POINTER_NAMES = (
    "q",
    "k_cache",
    "v_cache",
    "k_new",
    "v_new",
    "cache_seqlens",
    "block_table",
    "o",
    "lse",
    "o_part",
    "lse_part",
    "counters",
)
ALIBI_POINTER = "alibi_slopes"  # float32 [heads_q] or [batch, heads_q], with problem.alibi
# Q, the caches and the new keys move in 16-byte chunks (cp.async and the append's vector
# copies); everything else is read or written one element at a time.
POINTER_ALIGN_BYTES = {
    "q": 16,
    "k_cache": 16,
    "v_cache": 16,
    "k_new": 16,
    "v_new": 16,
    "o": 2,
    "lse": 4,
    "o_part": 4,
    "lse_part": 4,
    "counters": 4,
    "cache_seqlens": 4,
    "block_table": 4,
    ALIBI_POINTER: 4,
}


@dataclass(frozen=True, kw_only=True)
class DecodeRun:
    """A launch's run-time values that are not part of the problem (they never change the
    binary): the new tokens, the cache's extent, the mask and the score cap."""

    seq_new: int = 0  # tokens appended from k_new / v_new
    max_pages: int = 0  # block_table's second extent (paged caches)
    cache_capacity: int = 0  # rows per batch entry of a contiguous cache
    window_left: int = -1  # -1: unbounded
    window_right: int = -1  # -1: unbounded; a causal problem makes it 0
    softcap: float = 0.0  # 0: no cap


class AttentionDecodeFamily(SpaceFamily):
    """Split-KV decoding against a paged or contiguous KV cache (flash_attn_with_kvcache)."""

    name = "attention_decode"
    op = "attention_decode"
    kernel_name = "tessera_attention_decode"
    template_path = "attention_decode/attention_decode.cu.j2"
    tiles = space  # grid, smem_bytes, default_config (SpaceFamily); before the rebinding
    space = space.SPACE
    params_fields = PARAMS_FIELDS
    params_type = params_structure("AttentionDecodeParams", PARAMS_FIELDS)

    def template_context(
        self, problem: Problem, config: TileConfig, *, specialized: bool
    ) -> Mapping[str, Any]:
        p = space.as_problem(problem)
        kv_stages = config.num_stages * 2 * config.block_n * space.row_bytes(p)
        return {
            "kernel_name": self.kernel_name,
            "params_fields": self.params_fields,
            "specialized": specialized,
            "dtype": p.dtype,
            "head_dim": p.head_dim,
            "paged": p.page_size > 0,
            "has_alibi": p.alibi != "none",
            "page_size": p.page_size,
            "heads_q": p.heads,
            "heads_kv": p.heads_kv,
            "seq_q": p.seq_q,
            "block_m": config.block_m,
            "block_n": config.block_n,
            "num_warps": config.num_warps,
            "num_stages": config.num_stages,
            "row_pad_elems": space.ROW_PAD_ELEMS,
            "red_pad_floats": space.RED_PAD_FLOATS,
            "kv_region_bytes": max(kv_stages, space.reduction_bytes(p, config)),
            "smem_bytes": self.smem_bytes(problem, config),
        }

    def make_params(
        self,
        problem: Problem,
        *,
        pointers: Mapping[str, int],
        scale: float | None = None,
        run: DecodeRun | None = None,
    ) -> ctypes.Structure:
        """Params by value; `scale` defaults to 1/sqrt(head_dim), `run` to a tuning launch's
        values: every sequence fills the bucket, no new tokens, no window, no softcap. Pointers:
        POINTER_NAMES, and alibi_slopes (float32) when the problem has ALiBi."""
        p = space.as_problem(problem)
        if run is None:  # generator.emulate_decode.full_cache_inputs: every sequence full
            pages = ceil_div(p.seq_kv, p.page_size) if p.page_size else 1
            run = DecodeRun(max_pages=pages, cache_capacity=p.seq_kv)
        softmax_scale = default_scale(p.head_dim) if scale is None else float(scale)
        if not softmax_scale > 0.0:
            raise ValueError(f"softmax scale={softmax_scale}: must be positive")
        names = POINTER_NAMES + ((ALIBI_POINTER,) if p.alibi != "none" else ())
        align = {n: POINTER_ALIGN_BYTES[n] for n in names}
        checked = checked_pointers(self.name, pointers, names, align)
        return self.params_type(
            **checked,
            heads_q=p.heads,
            heads_kv=p.heads_kv,
            seq_q=p.seq_q,
            seq_new=run.seq_new,
            page_size=p.page_size,
            max_pages=run.max_pages,
            cache_capacity=run.cache_capacity,
            window_left=run.window_left,
            window_right=0 if p.causal else run.window_right,  # causal is right = 0 (FA2)
            softmax_scale=softmax_scale,
            softcap=float(run.softcap),
            alibi_batch_stride=p.heads if p.alibi == "batch_heads" else 0,
        )


FAMILY = AttentionDecodeFamily()
