"""The attention variants through the Runtime (tiers 1 and 2, signatures, the trace, hotspots)
and through runtime.torch, against the float64 reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autotune.hotspots import TraceRecord, propose_tasks, rank, tune_command
from runtime import Runtime, RuntimeConfig
from templates.attention.reference import attention_reference
from tessera_core.types import AttentionProblem

ARCH = "sm_90"
VARIANTS = {"window_size": (12, 3), "softcap": 8.0, "layout": "bshd"}


def _inputs(seed: int) -> tuple[np.ndarray, ...]:
    """bshd q [1, 37, 4, 24], k and v with 2 KV heads (GQA), per-batch-head ALiBi slopes."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((1, 37, 4, 24)).astype(np.float16)
    k = rng.standard_normal((1, 45, 2, 24)).astype(np.float16)
    v = rng.standard_normal((1, 45, 2, 24)).astype(np.float16)
    slopes = (rng.random((1, 4)) * 0.3).astype(np.float32)
    return q, k, v, slopes


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want))


def test_runtime_tiers_1_and_2_run_every_variant_at_once(tmp_path: Path) -> None:
    q, k, v, slopes = _inputs(1)
    want_o, want_lse = attention_reference(
        q, k, v, causal=True, alibi_slopes=slopes, accum_dtype=np.float64, **VARIANTS
    )
    config = RuntimeConfig(
        device="emulator", arch=ARCH, tier2_min_calls=1, tier3=False, tuning_workers=0,
        cache_dirs=(tmp_path,),
    )  # fmt: skip
    with Runtime(config=config) as rt:
        outs = [
            rt.attention(q, k, v, causal=True, alibi_slopes=slopes, return_lse=True, **VARIANTS)
            for _ in range(2)
        ]
        calls = [r for r in rt.history() if r.event == "call"]
    assert [r.tier for r in calls] == [1, 2]
    assert calls[1].kernel_key == (
        "attention_fwd.fp16.d24.causal.gqa.window.softcap.alibi.bshd.sm_90.generic"
    )
    for o, lse in outs:  # a tier-1 output is as contiguous as a kernel's
        assert o.shape == q.shape and o.flags.c_contiguous and lse.shape == (1, 4, 37)
        assert _rel_err(o, want_o) < 4 * 2.0**-11
        assert np.max(np.abs(lse - want_lse)) < 1e-3
    problem = calls[0].problem()
    assert problem == AttentionProblem(
        1, 4, 37, 45, 24, causal=True, heads_kv=2, window_left=12, window_right=-1,
        softcap=8.0, alibi="batch_heads", layout="bshd",
    )  # fmt: skip


def test_variants_are_separate_signatures_traced_and_proposed_for_tuning() -> None:
    q, k, v, slopes = _inputs(2)
    with Runtime(device="cpu") as rt:
        rt.attention(q, k, v, **VARIANTS)
        rt.attention(q, k, v, alibi_slopes=slopes, **VARIANTS)
        rt.attention(q, k, v, alibi_slopes=slopes[0], **VARIANTS)  # per-head slopes
        assert rt.stats().signatures == 3
        records = [TraceRecord.from_dict(_json(r)) for r in rt.history()]
    assert records[0].variant == {
        "heads_kv": 2, "layout": "bshd", "softcap": 8.0, "window_left": 12, "window_right": 3,
    }  # fmt: skip
    problems = propose_tasks(rank(records, min_count=1), 3)
    assert {p.alibi for p in problems if isinstance(p, AttentionProblem)} == {
        "none",
        "heads",
        "batch_heads",
    }
    command = tune_command(records[0].problem())
    assert command.endswith("--gqa 4:2 --window 12,3 --softcap 8 --layout bshd")


def _json(record: TraceRecord) -> dict:
    import json

    return json.loads(record.to_json())


def test_plain_trace_lines_carry_no_variant_key() -> None:
    q = np.zeros((1, 1, 16, 16), np.float16)
    with Runtime(device="cpu") as rt:
        rt.attention(q, q, q)
        assert "variant" not in rt.history()[0].to_json()


def test_torch_attention_takes_the_variants_and_their_backward() -> None:
    torch = pytest.importorskip("torch")
    import runtime.torch as tt

    q, k, v, slopes = _inputs(3)
    want_o, _ = attention_reference(
        q, k, v, alibi_slopes=slopes, accum_dtype=np.float64, **VARIANTS
    )
    tq, tk, tv, ts = (torch.from_numpy(x) for x in (q, k, v, slopes))
    with Runtime(device="cpu") as rt:
        out = tt.attention(tq, tk, tv, alibi_slopes=ts, runtime=rt, **VARIANTS)
        assert _rel_err(out.numpy(), want_o) < 4 * 2.0**-11
        handle = tt.handle_of(rt)
        torch.library.opcheck(
            tt.attention_fwd, (tq, tk, tv, False, None, handle, 12, 3, 8.0, ts, "bshd")
        )
        bhsd = [x.transpose(1, 2).contiguous().requires_grad_() for x in (tq, tk, tv)]
        out = tt.attention(*bhsd, runtime=rt)  # GQA alone is a variant too
        out.sum().backward()
        assert [x.grad.shape for x in bhsd] == [x.shape for x in bhsd]  # k, v: 2 KV heads


def _packed(seed: int) -> tuple[np.ndarray, ...]:
    """3 packed sequences (one without queries), GQA 4:2, head_dim 24, per-batch slopes."""
    rng = np.random.default_rng(seed)
    cu_q = np.array([0, 5, 5, 41], dtype=np.int32)
    cu_k = np.array([0, 17, 20, 50], dtype=np.int32)
    q = rng.standard_normal((41, 4, 24)).astype(np.float16)
    k = rng.standard_normal((50, 2, 24)).astype(np.float16)
    v = rng.standard_normal((50, 2, 24)).astype(np.float16)
    slopes = (rng.random((3, 4)) * 0.3).astype(np.float32)
    return q, k, v, cu_q, cu_k, slopes


def test_attention_varlen_runs_tiers_1_and_2_against_the_varlen_reference(
    tmp_path: Path,
) -> None:
    from templates.attention.reference import attention_varlen_reference

    q, k, v, cu_q, cu_k, slopes = _packed(5)
    options = {"causal": True, "window_size": (8, 0), "softcap": 5.0, "alibi_slopes": slopes}
    want_o, want_lse = attention_varlen_reference(
        q, k, v, cu_q, cu_k, accum_dtype=np.float64, **options
    )
    config = RuntimeConfig(
        device="emulator", arch=ARCH, tier2_min_calls=1, tier3=False, tuning_workers=0,
        cache_dirs=(tmp_path,),
    )  # fmt: skip
    lengths = {"max_seqlen_q": 36, "max_seqlen_k": 30}
    with Runtime(config=config) as rt:
        outs = [
            rt.attention_varlen(
                q,
                k,
                v,
                cu_seqlens_q=cu_q,
                cu_seqlens_k=cu_k,
                return_lse=True,
                **lengths,
                **options,
            )
            for _ in range(2)
        ]
        calls = [r for r in rt.history() if r.event == "call"]
    assert [r.tier for r in calls] == [1, 2]
    assert calls[1].kernel_key == (
        "attention_fwd.fp16.d24.causal.gqa.window.softcap.alibi.bshd.varlen.sm_90.generic"
    )
    # The tuned kernel's key names the length bucket, not the lengths.
    assert calls[0].problem().kernel_key(ARCH) == (
        "attention_fwd.fp16.b3.h4.sq64.skv32.d24.causal.hkv2.win8_-1.cap5.alibi_batch_heads"
        ".bshd.varlen.sm_90"
    )
    for o, lse in outs:
        assert o.shape == q.shape and lse.shape == (4, 41)
        assert _rel_err(o, want_o) < 4 * 2.0**-11
        seen = np.isfinite(want_lse)
        assert np.max(np.abs(lse[seen] - want_lse[seen])) < 1e-3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"max_seqlen_q": 3}, r"cu_seqlens_q=\[0, 5, 5, 41\]: expected int32 \[batch \+ 1\]"),
        ({"max_seqlen_k": 0}, r"max_seqlen_k=0: expected a positive int"),
        (
            {"cu_seqlens_q": np.array([0, 5, 5, 41])},
            r"cu_seqlens_q has shape \(4,\) and dtype int64",
        ),
        ({"cu_seqlens_k": np.array([0, 20, 50], np.int32)}, r"must have the same length"),
        ({"cu_seqlens_q": [0, 5, 5, 41]}, r"cu_seqlens_q is a list"),
        ({"q": np.zeros((1, 41, 4, 24), np.float16)}, r"q has rank 4 .*\[total, heads, head_dim\]"),
    ],
)
def test_attention_varlen_refuses_bad_arguments_in_one_line(
    override: dict[str, Any], message: str
) -> None:
    q, k, v, cu_q, cu_k, _ = _packed(6)
    args: dict[str, Any] = {
        "q": q, "k": k, "v": v, "cu_seqlens_q": cu_q, "cu_seqlens_k": cu_k,
        "max_seqlen_q": 36, "max_seqlen_k": 30,
    }  # fmt: skip
    with Runtime(device="cpu") as rt:
        with pytest.raises(ValueError, match=message):
            rt.attention_varlen(**(args | override))
        assert rt.history() == []
