"""The attention_sm90 family object: Params (TMA tensor maps), launch geometry, template vars."""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any, Literal

from templates.attention.family import default_scale
from templates.attention_sm90 import space
from templates.attention_sm90.fp8 import padded_keys
from templates.family import (
    ParamField,
    SpaceFamily,
    checked_pointers,
    params_structure,
)
from templates.tma import TensorMap3D, TensorMapBytes
from tessera_core.types import AttentionProblem, Problem, TileConfig, dtype_bytes

# The tensor maps come first: tensor_map_t is 64-byte aligned, and at offsets 0, 128 and 256
# the C struct and its ctypes mirror agree without padding rules.
PARAMS_FIELDS: tuple[ParamField, ...] = (
    ParamField(name="map_q", c_type="tessera::tensor_map_t", ctype=TensorMapBytes),
    ParamField(name="map_k", c_type="tessera::tensor_map_t", ctype=TensorMapBytes),
    ParamField(name="map_v", c_type="tessera::tensor_map_t", ctype=TensorMapBytes),
    ParamField(name="o", c_type="elem_t*", ctype=ctypes.c_void_p),
    ParamField(name="lse", c_type="float*", ctype=ctypes.c_void_p),
    ParamField(name="seq_q", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="seq_kv", c_type="int", ctype=ctypes.c_int32),
    ParamField(name="softmax_scale", c_type="float", ctype=ctypes.c_float),
    # e4m3: the per-tensor factors the e4m3 values are multiplied by (1.0 for 16-bit).
    ParamField(name="descale_q", c_type="float", ctype=ctypes.c_float),
    ParamField(name="descale_k", c_type="float", ctype=ctypes.c_float),
    ParamField(name="descale_v", c_type="float", ctype=ctypes.c_float),
)
POINTER_NAMES = ("q", "k", "v", "o", "lse")
# TMA needs 16-byte aligned tensors; O is stored in 4-byte pairs, LSE in floats.
POINTER_ALIGN_BYTES = {"q": 16, "k": 16, "v": 16, "o": 4, "lse": 4}
TensorMapEncoding = Literal["host", "driver"]


def tensor_maps(
    problem: AttentionProblem, q: int, k: int, v: int
) -> tuple[TensorMap3D, TensorMap3D, TensorMap3D]:
    """The TMA descriptions of Q, K and V as (head_dim, seq, batch * heads) tensors, read in
    boxes of 64 rows of 128 bytes: a box hanging over a head's end reads zeros there. For
    e4m3, `v` is the permuted V^T (fp8.transpose_v): (padded keys, head_dim, heads)."""
    d, heads = problem.head_dim, problem.batch * problem.heads
    elem = dtype_bytes(problem.dtype)

    def tensor(address: int, cols: int, rows: int) -> TensorMap3D:
        return TensorMap3D(
            address=address, elem_bytes=elem, inner=cols, outer=rows,
            outer_stride_bytes=cols * elem, box_inner=space.ROW_BYTES // elem,
            box_outer=space.TMA_BOX, swizzle="128B", depth=heads,
            depth_stride_bytes=rows * cols * elem,
        )  # fmt: skip

    if space.is_fp8(problem):
        map_v = tensor(v, padded_keys(problem.seq_kv), d)
    else:
        map_v = tensor(v, d, problem.seq_kv)
    return tensor(q, d, problem.seq_q), tensor(k, d, problem.seq_kv), map_v


class AttentionSm90Family(SpaceFamily):
    """Forward attention over [batch, heads, seq, head_dim] with TMA, wgmma and ping-pong."""

    name = "attention_sm90"
    op = "attention"
    kernel_name = "tessera_attention_sm90"
    template_path = "attention_sm90/attention_sm90.cu.j2"
    tiles = space  # grid, smem_bytes, default_config (SpaceFamily); before the rebinding
    space = space.SPACE
    params_fields = PARAMS_FIELDS
    params_type = params_structure("AttentionSm90Params", PARAMS_FIELDS)

    def template_context(
        self, problem: Problem, config: TileConfig, *, specialized: bool
    ) -> Mapping[str, Any]:
        p = space.as_problem(problem)
        return {
            "kernel_name": self.kernel_name,
            "params_fields": self.params_fields,
            "specialized": specialized,
            "dtype": p.dtype,
            "fp8": space.is_fp8(p),
            "causal": p.causal,
            "head_dim": p.head_dim,
            "seq_q": p.seq_q,
            "seq_kv": p.seq_kv,
            **config.to_dict(),  # block_m, block_n, block_k, num_warps, num_stages, pingpong
            "pingpong": int(space.pingpong(config)),
        }

    def make_params(
        self,
        problem: Problem,
        *,
        pointers: Mapping[str, int],
        scale: float | None = None,
        descale: tuple[float, float, float] = (1.0, 1.0, 1.0),
        tensor_map_encoding: TensorMapEncoding = "host",
    ) -> ctypes.Structure:
        """Params by value; `scale` defaults to 1/sqrt(head_dim). Pointers: q, k, v, o, lse
        (e4m3: v is fp8.transpose_v's V^T, o is bf16); `descale` the (q, k, v) factors of
        e4m3 inputs.
        The tensor maps are encoded for the emulator ("host", the default: what
        generator.emulator runs) or by the CUDA driver ("driver": a GPU launch must pass it)."""
        p = space.as_problem(problem)
        softmax_scale = default_scale(p.head_dim) if scale is None else float(scale)
        if not softmax_scale > 0.0:
            raise ValueError(f"softmax scale={softmax_scale}: must be positive")
        checked = checked_pointers(self.name, pointers, POINTER_NAMES, POINTER_ALIGN_BYTES)
        if len(descale) != 3 or not all(f > 0.0 for f in descale):
            raise ValueError(f"descale={descale!r}: expected three positive (q, k, v) factors")
        if tensor_map_encoding not in ("host", "driver"):
            raise ValueError(
                f"tensor_map_encoding={tensor_map_encoding!r}: expected 'host' or 'driver'"
            )
        maps = tensor_maps(p, checked["q"], checked["k"], checked["v"])
        encoded = [
            m.host_bytes() if tensor_map_encoding == "host" else m.encode_driver() for m in maps
        ]
        return self.params_type(
            map_q=encoded[0],
            map_k=encoded[1],
            map_v=encoded[2],
            o=checked["o"],
            lse=checked["lse"],
            seq_q=p.seq_q,
            seq_kv=p.seq_kv,
            softmax_scale=softmax_scale,
            descale_q=descale[0],
            descale_k=descale[1],
            descale_v=descale[2],
        )


FAMILY = AttentionSm90Family()
