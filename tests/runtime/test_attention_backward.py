"""Runtime.attention_backward: float64-checked gradients, validation, dispatch through the tiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from runtime_fakes import FakeBackends

from autotune.hotspots import load_trace, propose_tasks, rank, tune_command
from runtime import Runtime, RuntimeConfig
from templates.attention.reference import attention_reference
from templates.attention_bwd.reference import attention_bwd_reference
from tessera_core.types import AttentionBackwardProblem

# Normwise relative error of fp16/bf16 gradients against float64 (inputs rounded to the dtype
# first, so only the computation's and the outputs' roundings count): a few output ulps.
GRAD_TOLERANCE = {"fp16": 4 * 2.0**-11, "bf16": 4 * 2.0**-8}
DTYPES = {"fp16": np.dtype(np.float16), "bf16": np.dtype(ml_dtypes.bfloat16)}


def _problem(
    dtype: Any, seq_q: int, seq_kv: int, causal: bool, seed: int = 0
) -> tuple[np.ndarray, ...]:
    """q, k, v, o, lse, do with o and lse from the forward, all rounded to `dtype`."""
    rng = np.random.default_rng(seed * 1000 + seq_q * 37 + seq_kv)
    q, do = (rng.standard_normal((1, 3, seq_q, 32)).astype(dtype) for _ in range(2))
    k, v = (rng.standard_normal((1, 3, seq_kv, 32)).astype(dtype) for _ in range(2))
    o, lse = attention_reference(q, k, v, causal=causal)
    return q, k, v, o.astype(dtype), lse, do


@pytest.mark.parametrize("dtype_name", ["fp16", "bf16"])
@pytest.mark.parametrize("seq_q,seq_kv,causal", [(45, 45, False), (29, 83, True), (70, 33, True)])
def test_backward_matches_float64_within_the_stated_tolerance(
    dtype_name: str, seq_q: int, seq_kv: int, causal: bool
) -> None:
    dtype = DTYPES[dtype_name]
    q, k, v, o, lse, do = _problem(dtype, seq_q, seq_kv, causal)
    with Runtime(device="cpu", config=RuntimeConfig(tuning_workers=0)) as rt:
        grads = rt.attention_backward(q, k, v, o, lse, do, causal=causal, scale=0.2)
    wide = [x.astype(np.float64) for x in (q, k, v, o, lse, do)]
    want = attention_bwd_reference(*wide, causal=causal, scale=0.2, accum_dtype=np.float64)
    for name, got, exact in zip(("dq", "dk", "dv"), grads, want, strict=True):
        assert got.dtype == dtype and got.shape == exact.shape
        assert np.all(np.isfinite(got.astype(np.float64))), name
        err = np.linalg.norm(got.astype(np.float64) - exact) / np.linalg.norm(exact)
        assert err <= GRAD_TOLERANCE[dtype_name], (name, err)


def test_backward_signature_settles_at_tier_1_on_a_backend_without_its_kernel() -> None:
    # Thresholds of 0 would promote the forward at once; a backend whose compiled_ops lack
    # attention_bwd never gets asked to build, load or tune a kernel for it.
    backends = FakeBackends(compiled_ops=frozenset({"attention", "gemm"}))
    config = RuntimeConfig(tier2_min_calls=0, tier3_min_calls=0, tuning_workers=1)
    q, k, v, o, lse, do = _problem(np.float16, 16, 16, False)
    with Runtime(config=config, backends=backends) as rt:  # type: ignore[arg-type]
        for _ in range(5):
            dq, dk, dv = rt.attention_backward(q, k, v, o, lse, do)
        assert rt.wait_for_tuning(10)
        stats = rt.stats()
        history = rt.history()
    assert np.all(dq == 1) and np.all(dk == 1) and np.all(dv == 1)  # the fake tier-1 kernel
    assert not backends.generic_builds and not backends.tuned
    assert stats.tiers[1].count == 5 and stats.signatures_by_tier[1] == 1
    assert stats.promotions == 0 and stats.tuning.finished == 0
    assert [(r.event, r.op, r.tier) for r in history] == [("call", "attention_bwd", 1)] * 5


def test_backward_signature_climbs_to_the_tuned_kernel_like_the_forward() -> None:
    backends = FakeBackends()
    config = RuntimeConfig(tier2_min_calls=1, tier3_min_calls=1, tuning_workers=1)
    q, k, v, o, lse, do = _problem(np.float16, 16, 24, True)
    problem = AttentionBackwardProblem(1, 3, 16, 24, 32, dtype="fp16", causal=True)
    with Runtime(config=config, backends=backends) as rt:  # type: ignore[arg-type]
        rt.attention_backward(q, k, v, o, lse, do, causal=True)
        rt.attention_backward(q, k, v, o, lse, do, causal=True)  # tier 2; queues the tuning
        assert rt.wait_for_tuning(10)
        dq, _, _ = rt.attention_backward(q, k, v, o, lse, do, causal=True)
        calls = [(r.op, r.tier, r.kernel_key) for r in rt.history() if r.event == "call"]
    assert backends.generic_builds == {problem.generic_key("sm_90"): 1}
    assert backends.tuned == ["attention_bwd.fp16.b1.h3.sq16.skv24.d32.causal.sm_90"]
    assert calls == [
        ("attention_bwd", 1, None),
        ("attention_bwd", 2, "attention_bwd.fp16.d32.causal.sm_90.generic"),
        ("attention_bwd", 3, "attention_bwd.fp16.b1.h3.sq16.skv24.d32.causal.sm_90"),
    ]
    assert np.all(dq == 3)


def test_backward_calls_are_traced_ranked_and_proposed_for_tuning() -> None:
    q, k, v, o, lse, do = _problem(np.float16, 24, 40, True)
    with Runtime(device="cpu", config=RuntimeConfig(tuning_workers=0, tier2=False)) as rt:
        for _ in range(3):
            rt.attention_backward(q, k, v, o, lse, do, causal=True)
        hotspots = rank(rt.history())
    problem = AttentionBackwardProblem(1, 3, 24, 40, 32, dtype="fp16", causal=True)
    assert [h.problem for h in hotspots] == [problem]
    assert hotspots[0].count == 3
    assert propose_tasks(hotspots, 5) == [problem]


def _good() -> dict[str, Any]:
    q, k, v, o, lse, do = _problem(np.float16, 8, 16, False)
    return {"q": q, "k": k, "v": v, "o": o, "lse": lse, "do": do}


BAD_INPUTS = {
    "o shape": ("o", lambda a: np.ascontiguousarray(a["o"][:, :, :4]), "o has shape"),
    "do dtype": ("do", lambda a: a["do"].astype(ml_dtypes.bfloat16), "do is bf16 and q is fp16"),
    "do rank": ("do", lambda a: a["do"][0], "do has rank 3"),
    "lse dtype": ("lse", lambda a: a["lse"].astype(np.float16), "lse is float16"),
    "lse shape": ("lse", lambda a: a["lse"][..., :-1], "lse is float32 of shape"),
    "lse list": ("lse", lambda a: a["lse"].tolist(), "lse is a list"),
    "lse strided": ("lse", lambda a: np.repeat(a["lse"], 2, axis=-1)[..., ::2], "lse is not"),
    "q head_dim": ("q", lambda a: np.ascontiguousarray(a["q"][..., :16]), "k has shape"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_backward_input_is_a_one_line_value_error_naming_it(case: str) -> None:
    name, spoil, message = BAD_INPUTS[case]
    args = _good()
    args[name] = spoil(args)
    with Runtime(device="cpu", config=RuntimeConfig(tuning_workers=0)) as rt:
        with pytest.raises(ValueError, match=message) as info:
            rt.attention_backward(*args.values())
        with pytest.raises(ValueError, match="causal=1"):
            rt.attention_backward(*_good().values(), causal=1)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_a_trace_of_backward_calls_proposes_the_backward_to_generator_tune(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "trace.jsonl"
    q, k, v, o, lse, do = _problem(np.float16, 16, 16, False)
    config = RuntimeConfig(trace_path=trace, tuning_workers=0, tier2=False, tier3=False)
    with Runtime(config=config, backends=FakeBackends()) as rt:  # type: ignore[arg-type]
        for _ in range(3):
            rt.attention_backward(q, k, v, o, lse, do)
    records = load_trace(trace)
    assert len(records) == 3  # backward lines are well-formed records
    (problem,) = propose_tasks(rank(records, min_count=1), 1)
    assert problem == AttentionBackwardProblem(1, 3, 16, 16, 32, dtype="fp16")
    assert tune_command(problem) == (
        "python -m generator.tune --op attention_bwd --shape 1x3x16x16x32 --dtype fp16"
    )
