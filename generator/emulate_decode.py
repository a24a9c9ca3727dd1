"""Runs the attention_decode kernel (split-KV decoding against a paged KV cache) on the CPU."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from generator.emulator import NUMPY_DTYPES, EmulatedRun, dtype_name, render_problem, run_rendered
from generator.render import RenderedKernel
from templates.attention_decode import space
from templates.attention_decode.launch import (
    UPDATED_INPUTS,
    ZEROED_OUTPUTS,
    decode_launch,
    with_splits,
)
from tessera_core.errors import EmulatorError
from tessera_core.types import AlibiForm, AttentionDecodeProblem, TileConfig, decode_kv_bucket

INT32 = np.dtype(np.int32)
CHUNK_ELEMS = 8  # one 16-byte chunk of 16-bit elements
FLOAT32 = np.dtype(np.float32)
ALIBI_SLOPE_MAX = 0.3  # FlashAttention-2's tests: torch.rand(batch, heads) * 0.3


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
    alibi_slopes: np.ndarray | None = None,
) -> AttentionDecodeProblem:
    """The problem q [B, Sq, Hq, D] and a cache describe; seq_kv is the cache-length bucket of
    the longest sequence after the append, page_size the cache's second extent when paged,
    alibi the slopes' form ([Hq]: "heads", [B, Hq]: "batch_heads")."""
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
        alibi=alibi_form(alibi_slopes),
    )


def alibi_form(slopes: np.ndarray | None) -> AlibiForm:
    """ "none", "heads" ([heads_q]) or "batch_heads" ([batch, heads_q]) for ALiBi slopes."""
    if slopes is None:
        return "none"
    return "heads" if np.ndim(slopes) == 1 else "batch_heads"


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

    `tensors`: q, k_cache, v_cache, cache_seqlens (int32), and optionally k, v (new tokens),
    block_table (int32) and alibi_slopes (float32, needed when problem.alibi is not "none").
    `num_splits` > 0 overrides the configuration's split count (the binary does not depend on
    it); causal is window right 0, as in FlashAttention-2.
    """
    rendered = render_problem(problem, config, specialized=specialized, arch=arch)
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
    rendered = dataclasses.replace(rendered, config=with_splits(rendered.config, num_splits))
    launch = decode_launch(
        problem, rendered.config, tensors, window_size=window_size, softcap=softcap
    )
    emulated = run_rendered(
        rendered,
        inputs=launch.inputs,
        outputs=launch.outputs,
        scale=scale,
        accumulators=ZEROED_OUTPUTS,
        updated_inputs=UPDATED_INPUTS,
        params_extra={"run": launch.run},
    )
    out = emulated.outputs
    if np.any(out["counters"]):
        raise EmulatorError(
            f"kernel {rendered.kernel_name} ({rendered.config}) left a split arrival counter "
            "non-zero: the next launch would combine too early; check the last-block reset"
        )
    return DecodeResult(out["o"], out["lse"], out["k_cache"], out["v_cache"], emulated)


def full_cache_inputs(
    problem: AttentionDecodeProblem, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Inputs of a tuning or verification launch: every sequence fills the bucket (seq_kv
    keys), paged caches through a shuffled block table; no new tokens (k_new, v_new are
    16-byte placeholders), zeroed split counters for the most row blocks any tile makes, and
    ALiBi slopes when the problem has them.
    The names are the kernel's pointers (make_params' default DecodeRun matches them)."""
    dtype = NUMPY_DTYPES[problem.dtype]
    b, hkv, d = problem.batch, problem.heads_kv, problem.head_dim

    def draw(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(dtype)

    if problem.page_size:
        max_pages = -(-problem.seq_kv // problem.page_size)
        table = rng.permutation(b * max_pages).astype(INT32).reshape(b, max_pages)
        cache_shape = (b * max_pages, problem.page_size, hkv, d)
    else:
        table = np.zeros((b, 1), INT32)
        cache_shape = (b, problem.seq_kv, hkv, d)
    smallest_tile = space.tile(min(space.SPACE.choices("block_m")), 32, 1, 1)
    return {
        "q": draw(b, problem.seq_q, problem.heads, d),
        "k_cache": draw(*cache_shape),
        "v_cache": draw(*cache_shape),
        "k_new": np.zeros(CHUNK_ELEMS, dtype),
        "v_new": np.zeros(CHUNK_ELEMS, dtype),
        "cache_seqlens": np.full(b, problem.seq_kv, INT32),
        "block_table": table,
        "counters": np.zeros(space.counters(problem, smallest_tile), INT32),
        **alibi_inputs(problem, rng),
    }


def alibi_inputs(
    problem: AttentionDecodeProblem, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """{"alibi_slopes": float32 slopes drawn from U[0, 0.3) as FlashAttention-2's tests draw
    them, [heads_q] or [batch, heads_q]} for a problem with ALiBi, else {}."""
    if problem.alibi == "none":
        return {}
    shape = (problem.heads,) if problem.alibi == "heads" else (problem.batch, problem.heads)
    return {"alibi_slopes": (rng.random(shape) * ALIBI_SLOPE_MAX).astype(FLOAT32)}


def output_shapes(problem: AttentionDecodeProblem) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Output buffers of a launch with any configuration: O, LSE and the split workspaces
    sized for the most splits of the space."""
    splits = max(space.SPLIT_CHOICES)
    o_shape = (problem.batch, problem.seq_q, problem.heads, problem.head_dim)
    lse_shape = (problem.batch, problem.heads, problem.seq_q)
    return {
        "o": (o_shape, NUMPY_DTYPES[problem.dtype]),
        "lse": (lse_shape, FLOAT32),
        "o_part": ((splits, *o_shape), FLOAT32),
        "lse_part": ((splits, *lse_shape), FLOAT32),
    }


def verify_run(
    problem: AttentionDecodeProblem,
    inputs: Mapping[str, np.ndarray],
    *,
    config: TileConfig,
    specialized: bool,
    arch: str,
) -> EmulatedRun:
    """generator.verify's run of one configuration on full_cache_inputs."""
    names = ("q", "k_cache", "v_cache", "cache_seqlens", "alibi_slopes")
    tensors = {n: inputs[n] for n in names if n in inputs}
    table = inputs["block_table"] if problem.page_size else None
    result = run_attention_decode_problem(
        problem, {**tensors, "block_table": table}, config=config, specialized=specialized,
        arch=arch,
    )  # fmt: skip
    return result.run
