"""Runs one FA2 grid cell through a Runtime and judges it by FA2's rule, or skips it with the
runtime's own reason (a missing call or keyword, or a ValueError raised before anything ran)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fa2_grid import (
    FORWARD_BASELINE,
    Cell,
    alibi_slopes,
    cu_seqlens,
    normals,
    page_table,
    query,
    varlen_lengths,
)
from fa2_reference import Variant, attention64, attention_low_precision, judge

from runtime import Runtime

FORWARD_MULTIPLE = 2.0  # FA2: "at most twice the numerical error of a Pytorch implementation"
KVCACHE_MULTIPLE = 3.0  # FA2's test_flash_attn_kvcache: mult = 3 if not alibi else 5
KVCACHE_ALIBI_MULTIPLE = 5.0
VARLEN_KEYWORDS = ("cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k", "causal")


# -- asking the runtime ------------------------------------------------------------------------
def _traced_calls(rt: Runtime) -> int:
    stats = rt.stats()
    return stats.total_calls + stats.failed_calls


def _variant_keywords(variant: Variant, slopes: np.ndarray | None) -> dict[str, Any]:
    """FA2's keywords of the variants a cell uses; defaults are not passed, so a plain cell runs
    on a runtime that has never heard of them."""
    keywords: dict[str, Any] = {}
    if variant.window != (-1, -1):
        keywords["window_size"] = variant.window
    if variant.softcap > 0:
        keywords["softcap"] = variant.softcap
    if slopes is not None:
        keywords["alibi_slopes"] = slopes
    return keywords


def supported(rt: Runtime, method: str, cell: Cell, keywords: tuple[str, ...]) -> Any:
    """rt.<method>, if the runtime has it and it takes `keywords` and the cell's variant
    keywords; else skip with that reason (checked before any input is drawn: cheap)."""
    baseline = cell in FORWARD_BASELINE
    call = getattr(rt, method, None)
    if call is None:
        _unsupported(f"Runtime has no {method}() yet", baseline=baseline)
    uses = {"window_size": cell.local, "softcap": cell.softcap > 0, "alibi_slopes": cell.alibi}
    names = (*keywords, *(name for name, used in uses.items() if used))
    parameters = inspect.signature(call).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    missing = [] if takes_any else [name for name in names if name not in parameters]
    if missing:
        _unsupported(f"Runtime.{method} takes no {', '.join(missing)} yet", baseline=baseline)
    return call


def ask(rt: Runtime, call: Any, cell: Cell, args: tuple[Any, ...], keywords: dict[str, Any]) -> Any:
    """call(*args, **keywords), checking that an emulated kernel ran it; skip with the runtime's
    reason if it refuses the arguments up front (a ValueError before anything was traced)."""
    traced = _traced_calls(rt)
    try:
        result = call(*args, **keywords)
    except ValueError as exc:
        if _traced_calls(rt) != traced:
            raise  # it ran and failed: a defect, never a skip
        _unsupported(
            f"Runtime.{call.__name__} refuses it: {exc}", baseline=cell in FORWARD_BASELINE
        )
    record = rt.history()[-1]
    assert record.event == "call" and record.tier >= 2, (
        f"served at tier {record.tier} ({record.detail or 'the NumPy reference'}), "
        "not by an emulated kernel"
    )
    return result


def _unsupported(reason: str, *, baseline: bool) -> None:
    if baseline:
        pytest.fail(f"a cell the runtime supported when the grid was written: {reason}")
    pytest.skip(reason)


def _assert_fa2_rule(
    out: Any, low: np.ndarray, want: np.ndarray, *, multiple: float, dtype: np.dtype
) -> None:
    out = np.asarray(out)
    assert out.shape == want.shape and out.dtype == dtype, (
        f"output {out.shape} {out.dtype}; expected {want.shape} {dtype}"
    )
    verdict = judge(out, low, want, multiple=multiple)
    assert verdict.passed, verdict.explain()


# -- the three kinds of cell -------------------------------------------------------------------
def run_forward(rt: Runtime, cell: Cell) -> None:
    """flash_attn_func's cell: q [b, heads_q, seq_q, d], k/v [b, heads_kv, seq_k, d], or
    [b, seq, heads, d] each (FA2's own layout) with layout="bshd"."""
    bshd = cell.layout == "bshd"
    call = supported(rt, "attention", cell, ("causal", "layout") if bshd else ("causal",))
    rng = cell.rng()
    variant = cell.variant(rng)
    b, d = cell.batch, cell.d
    q = query(cell, rng, (b, cell.heads_q, cell.seq_q, d))
    k, v = (normals(rng, (b, cell.heads_kv, cell.seq_k, d), cell.dtype) for _ in range(2))
    slopes = alibi_slopes(cell, rng)
    keywords = {"causal": cell.causal, **_variant_keywords(variant, slopes)}
    args = (q, k, v)
    if bshd:  # the same numbers, stored as FA2 stores them
        args = tuple(np.ascontiguousarray(np.swapaxes(x, 1, 2)) for x in args)
        keywords["layout"] = "bshd"
    out = ask(rt, call, cell, args, keywords)
    if bshd:
        out = np.swapaxes(np.asarray(out), 1, 2)
    want = attention64(q, k, v, variant, slopes)
    low = attention_low_precision(q, k, v, variant, slopes)
    _assert_fa2_rule(out, low, want, multiple=FORWARD_MULTIPLE, dtype=q.dtype)


def _per_sequence(
    reference: Callable[..., np.ndarray],
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    cu_q: np.ndarray,
    cu_k: np.ndarray,
    variant: Variant,
    slopes: np.ndarray | None,
) -> np.ndarray:
    """A packed [total_q, heads, d] output: each sequence alone through `reference`."""
    outs = []
    for i in range(len(cu_q) - 1):

        def bhsd(x: np.ndarray, cu: np.ndarray, i: int = i) -> np.ndarray:
            return np.swapaxes(x[cu[i] : cu[i + 1]], 0, 1)[None]

        seq_slopes = None if slopes is None else slopes[i : i + 1]
        o = reference(bhsd(q, cu_q), bhsd(k, cu_k), bhsd(v, cu_k), variant, seq_slopes)
        outs.append(np.swapaxes(o[0], 0, 1))
    return np.concatenate(outs)


def run_varlen(rt: Runtime, cell: Cell) -> None:
    """flash_attn_varlen_func's cell: q [total_q, heads_q, d], k/v [total_k, heads_kv, d]."""
    call = supported(rt, "attention_varlen", cell, VARLEN_KEYWORDS)
    rng = cell.rng()
    variant = cell.variant(rng)
    lengths_q = varlen_lengths(rng, cell.seq_q, cell.batch)
    lengths_k = varlen_lengths(rng, cell.seq_k, cell.batch)
    cu_q, cu_k = cu_seqlens(lengths_q), cu_seqlens(lengths_k)
    q = query(cell, rng, (int(cu_q[-1]), cell.heads_q, cell.d))
    k, v = (normals(rng, (int(cu_k[-1]), cell.heads_kv, cell.d), cell.dtype) for _ in range(2))
    slopes = alibi_slopes(cell, rng)
    keywords = {
        "cu_seqlens_q": cu_q,
        "cu_seqlens_k": cu_k,
        "max_seqlen_q": int(lengths_q.max()),
        "max_seqlen_k": int(lengths_k.max()),
        "causal": cell.causal,
        **_variant_keywords(variant, slopes),
    }
    out = ask(rt, call, cell, (q, k, v), keywords)
    want = _per_sequence(attention64, q, k, v, cu_q, cu_k, variant, slopes)
    low = _per_sequence(attention_low_precision, q, k, v, cu_q, cu_k, variant, slopes)
    _assert_fa2_rule(out, low, want, multiple=FORWARD_MULTIPLE, dtype=q.dtype)


def run_kvcache(rt: Runtime, cell: Cell) -> None:
    """flash_attn_with_kvcache's cell: q [b, seq_q, heads_q, d] against a cache of capacity
    seq_k ([b, seq_k, heads_kv, d], or pages [blocks, page, heads_kv, d] and a block table)
    holding cache_seqlens keys, after appending seq_q new ones in place when new_kv."""
    names = ["cache_seqlens", "causal"]
    names += ["block_table"] if cell.page is not None else []
    names += ["k", "v"] if cell.new_kv else []
    call = supported(rt, "attention_with_kvcache", cell, tuple(names))
    rng = cell.rng()
    variant = cell.variant(rng)
    b, sq, sk, hkv, d = cell.batch, cell.seq_q, cell.seq_k, cell.heads_kv, cell.d
    q = query(cell, rng, (b, sq, cell.heads_q, d))
    new_k, new_v = (normals(rng, (b, sq, hkv, d), cell.dtype) for _ in range(2))
    low_len, high_len = (0, sk - sq + 1) if cell.new_kv else (1, sk + 1)
    cache_seqlens = rng.integers(low_len, high_len, size=b).astype(np.int32)
    keywords: dict[str, Any] = {"cache_seqlens": cache_seqlens, "causal": cell.causal}
    if cell.page is None:
        k_cache, v_cache = (normals(rng, (b, sk, hkv, d), cell.dtype) for _ in range(2))

        def logical(cache: np.ndarray) -> np.ndarray:
            return cache
    else:
        table = page_table(rng, sk, cell.page, b)
        pages = (table.size, cell.page, hkv, d)
        k_cache, v_cache = (normals(rng, pages, cell.dtype) for _ in range(2))
        keywords["block_table"] = table

        def logical(cache: np.ndarray) -> np.ndarray:
            return cache[table].reshape(b, -1, hkv, d)[:, :sk]

    want_k, want_v = logical(k_cache).copy(), logical(v_cache).copy()
    if cell.new_kv:
        keywords.update(k=new_k, v=new_v)
        for i, start in enumerate(cache_seqlens):
            want_k[i, start : start + sq], want_v[i, start : start + sq] = new_k[i], new_v[i]
    slopes = alibi_slopes(cell, rng)
    keywords.update(_variant_keywords(variant, slopes))
    out = ask(rt, call, cell, (q, k_cache, v_cache), keywords)
    if cell.new_kv:
        assert np.array_equal(logical(k_cache), want_k), "new k not appended in place"
        assert np.array_equal(logical(v_cache), want_v), "new v not appended in place"
    lengths = cache_seqlens + (sq if cell.new_kv else 0)
    wants, lows = [], []
    for i, length in enumerate(lengths):
        qi = np.swapaxes(q[i : i + 1], 1, 2)
        ki, vi = (np.swapaxes(x[i : i + 1, :length], 1, 2) for x in (want_k, want_v))
        seq_slopes = None if slopes is None else slopes[i : i + 1]
        wants.append(np.swapaxes(attention64(qi, ki, vi, variant, seq_slopes), 1, 2))
        lows.append(np.swapaxes(attention_low_precision(qi, ki, vi, variant, seq_slopes), 1, 2))
    multiple = KVCACHE_ALIBI_MULTIPLE if cell.alibi else KVCACHE_MULTIPLE
    want, low = np.concatenate(wants), np.concatenate(lows)
    _assert_fa2_rule(out, low, want, multiple=multiple, dtype=q.dtype)
