"""One attention_decode launch as data: the kernel's input arrays by pointer name, its output
buffers, the run-time values and the split count. The host emulator and the CUDA backend both
launch from it, so the argument packing is the one the emulated float64 tests check."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from templates.attention_decode import space
from templates.attention_decode.family import ALIBI_POINTER, DecodeRun
from tessera_core.types import AttentionDecodeProblem, TileConfig

INT32 = np.dtype(np.int32)
FLOAT32 = np.dtype(np.float32)
# Inputs the kernel writes into (the append), and outputs that start at zero (split arrival
# counters: the combining block resets its own to zero, so they end at zero too).
UPDATED_INPUTS = ("k_cache", "v_cache")
ZEROED_OUTPUTS = ("counters",)
OutputSpec = tuple[tuple[int, ...], np.dtype]


def with_splits(config: TileConfig, num_splits: int) -> TileConfig:
    """`config` with `num_splits` KV splits (0: unchanged); the binary does not depend on it."""
    if num_splits <= 0:
        return config
    options = {**dict(config.options), space.NUM_SPLITS: num_splits}
    return dataclasses.replace(config, options=tuple(options.items()))


@dataclass(frozen=True)
class DecodeLaunch:
    """inputs: contiguous arrays by Params pointer name (q, k_cache, v_cache, k_new, v_new,
    cache_seqlens, block_table, and alibi_slopes with ALiBi); outputs: (shape, dtype) of o,
    lse, the split workspaces o_part, lse_part and the counters; run: make_params' values."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, OutputSpec]
    run: DecodeRun
    splits: int


def launch_values(
    problem: AttentionDecodeProblem,
    config: TileConfig,
    *,
    q_shape: tuple[int, ...],
    cache_shape: tuple[int, ...],
    seq_new: int,
    max_pages: int | None,
    dtype: np.dtype,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
) -> tuple[DecodeRun, dict[str, OutputSpec]]:
    """make_params' run-time values and the output buffers of a launch of `config` on q of
    `q_shape` against a cache of `cache_shape` (max_pages: the block table's second extent, None
    without one). Causal is window right 0, as in FlashAttention-2."""
    batch, seq_q, heads_q, _ = q_shape
    splits = space.num_splits(config)
    left, right = window_size
    run = DecodeRun(
        seq_new=seq_new,
        max_pages=max_pages or 0,
        cache_capacity=0 if max_pages is not None else cache_shape[1],
        window_left=left,
        window_right=0 if problem.causal else right,
        softcap=softcap,
    )
    outputs = {
        "o": (tuple(q_shape), np.dtype(dtype)),
        "lse": ((batch, heads_q, seq_q), FLOAT32),
        "o_part": ((splits, *q_shape) if splits > 1 else (1,), FLOAT32),
        "lse_part": ((splits, batch, heads_q, seq_q) if splits > 1 else (1,), FLOAT32),
        "counters": ((space.counters(problem, config),), INT32),
    }
    return run, outputs


def decode_launch(
    problem: AttentionDecodeProblem,
    config: TileConfig,
    tensors: Mapping[str, np.ndarray | None],
    *,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
) -> DecodeLaunch:
    """The launch of `config` (its split count included) on `tensors`: q, k_cache, v_cache,
    cache_seqlens, and optionally k, v (new tokens), block_table and alibi_slopes (required
    when problem.alibi is not "none")."""
    q, k_cache, v_cache = (np.ascontiguousarray(tensors[n]) for n in ("q", "k_cache", "v_cache"))
    batch, _, _, head_dim = q.shape
    k_new, v_new, block_table = tensors.get("k"), tensors.get("v"), tensors.get("block_table")
    heads_kv = k_cache.shape[2]
    if k_new is None or v_new is None:
        k_new = v_new = np.zeros((batch, 0, heads_kv, head_dim), dtype=q.dtype)
    table = np.zeros((batch, 0), INT32) if block_table is None else block_table
    run, outputs = launch_values(
        problem, config, q_shape=q.shape, cache_shape=k_cache.shape, seq_new=k_new.shape[1],
        max_pages=None if block_table is None else table.shape[1], dtype=q.dtype,
        window_size=window_size, softcap=softcap,
    )  # fmt: skip
    inputs = {
        "q": q,
        "k_cache": k_cache,
        "v_cache": v_cache,
        "k_new": np.ascontiguousarray(k_new),
        "v_new": np.ascontiguousarray(v_new),
        "cache_seqlens": np.ascontiguousarray(tensors["cache_seqlens"], dtype=INT32),
        "block_table": np.ascontiguousarray(table, dtype=INT32),
    }
    if problem.alibi != "none":
        slopes = tensors.get(ALIBI_POINTER)
        if slopes is None:
            raise ValueError(f"problem alibi={problem.alibi!r} needs the alibi_slopes tensor")
        inputs[ALIBI_POINTER] = np.ascontiguousarray(slopes, dtype=FLOAT32)
    return DecodeLaunch(inputs, outputs, run, space.num_splits(config))
