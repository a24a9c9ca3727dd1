"""Runs the attention_decode kernel (split-KV decoding against a paged KV cache) on the CPU."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from generator.emulator import EmulatedRun, _render, dtype_name, run_rendered
from generator.render import RenderedKernel
from templates.attention_decode import space
from templates.attention_decode.family import DecodeRun
from tessera_core.errors import EmulatorError
from tessera_core.types import AttentionDecodeProblem, TileConfig, decode_kv_bucket

INT32 = np.dtype(np.int32)
FLOAT32 = np.dtype(np.float32)


@dataclass(frozen=True)
class DecodeResult:
    """O [batch, seq_q, heads_q, d], LSE [batch, heads_q, seq_q] (float32) and the caches with
    the new keys appended (copies: the emulator runs on guarded buffers)."""

    o: np.ndarray
    lse: np.ndarray
    k_cache: np.ndarray
    v_cache: np.ndarray
    run: EmulatedRun


def decode_problem(
    q: np.ndarray,
    k_cache: np.ndarray,
    *,
    cache_seqlens: np.ndarray,
    seq_new: int = 0,
    paged: bool,
    causal: bool = False,
) -> AttentionDecodeProblem:
    """The problem q [B, Sq, Hq, D] and a cache describe; seq_kv is the cache-length bucket of
    the longest sequence after the append, page_size the cache's second extent when paged."""
    batch, seq_q, heads_q, head_dim = q.shape
    longest = int(np.max(cache_seqlens)) + seq_new if len(cache_seqlens) else seq_new
    return AttentionDecodeProblem(
        batch,
        heads_q,
        seq_q,
        decode_kv_bucket(longest),
        head_dim,
        dtype_name(q),
        causal,
        heads_kv=k_cache.shape[2],
        page_size=k_cache.shape[1] if paged else 0,
    )


def run_attention_decode_problem(
    problem: AttentionDecodeProblem,
    tensors: Mapping[str, np.ndarray | None],
    *,
    scale: float | None = None,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    num_splits: int = 0,
    config: TileConfig | Mapping[str, int] | None = None,
    specialized: bool = False,
    arch: str | None = None,
) -> DecodeResult:
    """Render the decode kernel for `problem` and run it.

    `tensors`: q, k_cache, v_cache, cache_seqlens (int32), and optionally k, v (new tokens) and
    block_table (int32). `num_splits` > 0 overrides the configuration's split count (the
    binary does not depend on it); causal is window right 0, as in FlashAttention-2.
    """
    rendered = _render(problem, config, specialized=specialized, arch=arch)
    return run_rendered_decode(
        rendered, tensors, scale=scale, window_size=window_size, softcap=softcap,
        num_splits=num_splits,
    )  # fmt: skip


def run_rendered_decode(
    rendered: RenderedKernel,
    tensors: Mapping[str, np.ndarray | None],
    *,
    scale: float | None = None,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    num_splits: int = 0,
) -> DecodeResult:
    """Run an already rendered decode kernel (tests plant defects in its source) on `tensors`,
    as run_attention_decode_problem describes."""
    problem = space.as_problem(rendered.problem)
    if num_splits > 0:
        options = {**dict(rendered.config.options), space.NUM_SPLITS: num_splits}
        tile = dataclasses.replace(rendered.config, options=tuple(options.items()))
        rendered = dataclasses.replace(rendered, config=tile)
    q, k_cache, v_cache = (np.ascontiguousarray(tensors[n]) for n in ("q", "k_cache", "v_cache"))
    batch, seq_q, heads_q, head_dim = q.shape
    k_new, v_new, block_table = tensors.get("k"), tensors.get("v"), tensors.get("block_table")
    heads_kv = k_cache.shape[2]
    if k_new is None or v_new is None:
        k_new = v_new = np.zeros((batch, 0, heads_kv, head_dim), dtype=q.dtype)
    paged = block_table is not None
    table = np.zeros((batch, 0), INT32) if block_table is None else block_table
    splits = space.num_splits(rendered.config)
    left, right = window_size
    run = DecodeRun(
        seq_new=k_new.shape[1],
        max_pages=table.shape[1],
        cache_capacity=0 if paged else k_cache.shape[1],
        window_left=left,
        window_right=0 if problem.causal else right,
        softcap=softcap,
    )
    emulated = run_rendered(
        rendered,
        inputs={
            "q": q,
            "k_cache": k_cache,
            "v_cache": v_cache,
            "k_new": np.ascontiguousarray(k_new),
            "v_new": np.ascontiguousarray(v_new),
            "cache_seqlens": np.ascontiguousarray(tensors["cache_seqlens"], dtype=INT32),
            "block_table": np.ascontiguousarray(table, dtype=INT32),
        },
        outputs={
            "o": (q.shape, q.dtype),
            "lse": ((batch, heads_q, seq_q), FLOAT32),
            "o_part": ((splits, *q.shape) if splits > 1 else (1,), FLOAT32),
            "lse_part": ((splits, batch, heads_q, seq_q) if splits > 1 else (1,), FLOAT32),
            "counters": ((space.counters(problem, rendered.config),), INT32),
        },
        scale=scale,
        accumulators=("counters",),
        updated_inputs=("k_cache", "v_cache"),
        params_extra={"run": run},
    )
    out = emulated.outputs
    if np.any(out["counters"]):
        raise EmulatorError(
            f"kernel {rendered.kernel_name} ({rendered.config}) left a split arrival counter "
            "non-zero: the next launch would combine too early; check the last-block reset"
        )
    return DecodeResult(out["o"], out["lse"], out["k_cache"], out["v_cache"], emulated)
