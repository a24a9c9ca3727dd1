"""PyTorch glue of Runtime.attention_with_kvcache: the custom op tessera::attention_with_kvcache.

    import runtime.torch_decode as td
    o = td.attention_with_kvcache(q, k_cache, v_cache, k=k, v=v, cache_seqlens=lengths,
                                  block_table=table, causal=True, runtime=rt)

flash_attn_with_kvcache's convention (see Runtime.attention_with_kvcache): the new k, v are
written into k_cache and v_cache in place (the op declares both as mutated, so torch.compile
orders it); CPU tensors are read as NumPy views, without copies, and CUDA tensors (a runtime on
device='cuda') through DLPack, in place, after the current stream's work; decoding has no
backward. The runtime handle travels as in runtime.torch.
"""

from __future__ import annotations

from typing import Any

import torch

from runtime.runtime import Runtime
from runtime.torch import _check, _from_runtime, _runtime, _scale, _to_runtime, handle_of


def attention_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    *,
    k: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
    cache_seqlens: torch.Tensor,
    block_table: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    num_splits: int = 0,
    alibi_slopes: torch.Tensor | None = None,
    runtime: Runtime | None = None,
) -> torch.Tensor:
    """O [batch, seq_q, heads_q, d] of decoding q against the caches (all on q's device);
    alibi_slopes: float32 [heads_q] or [batch, heads_q], FA2's ALiBi.

    Raises:
        ValueError: one line naming the argument (the runtime's checks, plus: every tensor on
            q's device).
    """
    _check("q, k_cache, v_cache", q, k_cache, v_cache)
    for name, tensor in (("k", k), ("v", v), ("cache_seqlens", cache_seqlens),
                         ("block_table", block_table), ("alibi_slopes", alibi_slopes),
                         ("q", q)):  # fmt: skip
        if tensor is not None and (
            not isinstance(tensor, torch.Tensor) or tensor.device != q.device
        ):
            raise ValueError(f"{name} must be a torch.Tensor on q's device ({q.device})")
    if not isinstance(window_size, tuple | list) or len(window_size) != 2:
        raise ValueError(f"window_size={window_size!r}: expected (left, right)")
    return kvcache_op(
        q, k_cache, v_cache, k, v, cache_seqlens, block_table, bool(causal), _scale(scale),
        int(window_size[0]), int(window_size[1]), float(softcap), int(num_splits),
        alibi_slopes, handle_of(runtime),
    )  # fmt: skip


@torch.library.custom_op("tessera::attention_with_kvcache", mutates_args=("k_cache", "v_cache"))
def kvcache_op(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: torch.Tensor | None,
    v: torch.Tensor | None,
    cache_seqlens: torch.Tensor,
    block_table: torch.Tensor | None,
    causal: bool,
    scale: float | None,
    window_left: int,
    window_right: int,
    softcap: float,
    num_splits: int,
    alibi_slopes: torch.Tensor | None,
    runtime: int,
) -> torch.Tensor:
    """O through Runtime.attention_with_kvcache; the caches are updated in place."""
    rt = _runtime(runtime)

    def host(tensor: torch.Tensor | None) -> Any:
        return None if tensor is None else _to_runtime(tensor)

    if q.is_cuda:  # the runtime's launches do not wait on torch's stream
        with torch.cuda.device(q.device):
            torch.cuda.current_stream().synchronize()
    out = rt.attention_with_kvcache(
        host(q), host(k_cache), host(v_cache), k=host(k), v=host(v),
        cache_seqlens=host(cache_seqlens), block_table=host(block_table), causal=causal,
        scale=scale, window_size=(window_left, window_right), softcap=softcap,
        num_splits=num_splits, alibi_slopes=host(alibi_slopes),
    )  # fmt: skip
    return _from_runtime(out, q, q.dtype)


@kvcache_op.register_fake
def _kvcache_fake(q: torch.Tensor, *args: Any) -> torch.Tensor:
    return torch.empty_like(q)
