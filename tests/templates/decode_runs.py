"""Shared helpers of the attention_decode tests: random caches, emulated runs, error checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from kernel_runs import LSE_ABS_TOLERANCE, REL_TOLERANCE, random, rel_error
from numpy.typing import NDArray

from generator.emulate_decode import DecodeResult, decode_problem
from templates.attention_decode.reference import attention_decode_reference
from tessera_core.types import AttentionDecodeProblem


@dataclass(frozen=True, kw_only=True)
class DecodeCase:
    """One decode call: shapes, per-batch cache lengths and the optional features."""

    heads_q: int
    heads_kv: int
    head_dim: int
    cache_seqlens: tuple[int, ...]
    seq_q: int = 1
    seq_new: int = 0
    page_size: int = 0  # 0: contiguous cache
    dtype: str = "fp16"
    causal: bool = False
    window_size: tuple[int, int] = (-1, -1)
    softcap: float = 0.0
    alibi: str = "none"  # ALiBi slopes: "none", "heads" [heads_q], "batch_heads" [batch, heads_q]
    spare_pages: int = 2  # block-table columns past the longest sequence's pages (valid pages)

    @property
    def batch(self) -> int:
        return len(self.cache_seqlens)

    def label(self) -> str:
        page = f"page{self.page_size}" if self.page_size else "contig"
        text = (
            f"b{self.batch}-sq{self.seq_q}-h{self.heads_q}:{self.heads_kv}-d{self.head_dim}-"
            f"{page}-new{self.seq_new}-{self.dtype}"
        )
        if self.causal:
            text += "-causal"
        if self.window_size != (-1, -1):
            text += f"-win{self.window_size[0]},{self.window_size[1]}"
        if self.softcap:
            text += f"-cap{self.softcap:g}"
        if self.alibi != "none":
            text += f"-alibi_{self.alibi}"
        return text


def make_tensors(case: DecodeCase, seed: int) -> dict[str, NDArray | None]:
    """Fresh random inputs; a paged cache's pages are handed out in a shuffled order, and its
    block table's spare columns name valid pages too (a wrong lookup reads wrong keys, not
    out of bounds)."""
    rng = np.random.default_rng(seed)
    b, d, hkv = case.batch, case.head_dim, case.heads_kv
    lengths = np.asarray(case.cache_seqlens, dtype=np.int32)
    longest = int(lengths.max()) + case.seq_new
    tensors: dict[str, NDArray | None] = {
        "q": random(rng, (b, case.seq_q, case.heads_q, d), case.dtype),
        "cache_seqlens": lengths,
        "k": None,
        "v": None,
        "block_table": None,
    }
    if case.seq_new:
        tensors["k"] = random(rng, (b, case.seq_new, hkv, d), case.dtype)
        tensors["v"] = random(rng, (b, case.seq_new, hkv, d), case.dtype)
    if case.page_size:
        max_pages = -(-longest // case.page_size) + case.spare_pages
        num_pages = b * max_pages
        table = rng.permutation(num_pages).astype(np.int32).reshape(b, max_pages)
        tensors["block_table"] = table
        shape = (num_pages, case.page_size, hkv, d)
    else:
        shape = (b, longest + 5, hkv, d)
    tensors["k_cache"] = random(rng, shape, case.dtype)
    tensors["v_cache"] = random(rng, shape, case.dtype)
    tensors["alibi_slopes"] = None
    if case.alibi != "none":  # FA2's tests: U[0, 0.3), here per head or per (batch, head)
        slopes_shape = (case.heads_q,) if case.alibi == "heads" else (b, case.heads_q)
        tensors["alibi_slopes"] = (rng.random(slopes_shape) * 0.3).astype(np.float32)
    return tensors


def problem_of(case: DecodeCase, tensors: dict[str, NDArray | None]) -> AttentionDecodeProblem:
    q, k_cache = tensors["q"], tensors["k_cache"]
    assert q is not None and k_cache is not None
    return decode_problem(
        q,
        k_cache,
        cache_seqlens=np.asarray(case.cache_seqlens),
        seq_new=case.seq_new,
        paged=case.page_size > 0,
        causal=case.causal,
        alibi_slopes=tensors.get("alibi_slopes"),
    )


def reference_of(
    case: DecodeCase, tensors: dict[str, NDArray | None]
) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """Float64 (O, LSE) and the caches after the append (copies; the inputs stay as they are)."""
    k_cache = np.array(tensors["k_cache"])
    v_cache = np.array(tensors["v_cache"])
    o, lse = attention_decode_reference(
        tensors["q"],  # type: ignore[arg-type]
        k_cache,
        v_cache,
        cache_seqlens=np.asarray(case.cache_seqlens),
        k=tensors["k"],
        v=tensors["v"],
        block_table=tensors["block_table"],
        causal=case.causal,
        window_size=case.window_size,
        softcap=case.softcap,
        alibi_slopes=tensors.get("alibi_slopes"),
    )
    return o, lse, k_cache, v_cache


def errors(case: DecodeCase, tensors: dict[str, NDArray | None], got: DecodeResult) -> list[str]:
    """What differs between an emulated run and the float64 reference (empty: it matches).

    O: normwise relative error within REL_TOLERANCE; LSE within LSE_ABS_TOLERANCE, -inf
    exactly where no key is seen; the caches bit-exact after the append."""
    o, lse, k_cache, v_cache = reference_of(case, tensors)
    found = []
    if not np.all(np.isfinite(np.asarray(got.o, dtype=np.float64))):
        found.append("O has non-finite values")
    elif (err := rel_error(got.o, o)) > REL_TOLERANCE[case.dtype]:
        found.append(f"O relative error {err:.3g} > {REL_TOLERANCE[case.dtype]}")
    if not np.array_equal(np.isneginf(got.lse), np.isneginf(lse)):
        found.append("LSE is -inf at other rows than the reference's")
    finite = np.isfinite(lse)
    if finite.any():
        lse_err = float(np.max(np.abs(np.asarray(got.lse, dtype=np.float64)[finite] - lse[finite])))
        if not lse_err <= LSE_ABS_TOLERANCE:
            found.append(f"LSE error {lse_err:.3g} > {LSE_ABS_TOLERANCE}")
    for name, want, have in (("k", k_cache, got.k_cache), ("v", v_cache, got.v_cache)):
        if not np.array_equal(want.view(np.uint16), np.asarray(have).view(np.uint16)):
            found.append(f"{name}_cache differs after the append")
    return found
