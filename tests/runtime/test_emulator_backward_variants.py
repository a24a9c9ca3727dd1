"""Runtime.attention_backward with the forward's variants through tiers 1, 2 and 3 on the host
emulator: float64 gradients at a ragged shape no kernel was tuned on, kernel keys that carry the
variant (no two variants share a cache entry), and one-line errors for bad arguments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autotune.hotspots import propose_tasks, rank, tune_command
from cache.store import KernelCache
from generator.grad_check import GRAD_TOL_ULPS, backward_inputs, grad_errors_ulps, reference_grads
from generator.render import template_hash
from runtime import Runtime, RuntimeConfig
from runtime.specialized import clear_memo
from runtime.validate_backward import attention_backward_key
from templates.attention_bwd import space
from templates.registry import get_family
from tessera_core.types import AttentionBackwardProblem

ARCH = "sm_80"  # a GPU machine of another arch never tries to launch the placeholder cubin
# GQA (4 query heads on 2 KV heads), bshd, a window, softcap and per-batch-head ALiBi at once.
PROBLEM = AttentionBackwardProblem(
    2, 4, 45, 70, 24, dtype="bf16", causal=True, heads_kv=2, window_left=20, softcap=4.0,
    alibi="batch_heads", layout="bshd",
)  # fmt: skip
OPTIONS = {"window_size": (20, -1), "softcap": 4.0, "layout": "bshd"}


@pytest.fixture(autouse=True)
def _fresh_memo() -> None:
    clear_memo()


def _args(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [inputs[name] for name in ("q", "k", "v", "o", "lse", "do")]


def test_variant_backward_tiers_match_float64_under_the_variant_keys(tmp_path: Path) -> None:
    inputs = backward_inputs(PROBLEM, seed=2)
    want = reference_grads(PROBLEM, inputs)
    tuned = space.tile(32, 32, 2, 1, 1)
    KernelCache(cache_dir=tmp_path).put(
        PROBLEM.kernel_key(ARCH),
        cubin=b"placeholder",
        ptx=None,
        metadata={
            "arch": ARCH,
            "problem": PROBLEM.to_dict(),
            "config": tuned.to_dict(),
            "template_hash": template_hash(get_family("attention_bwd")),
        },
    )
    config = RuntimeConfig(
        device="emulator", arch=ARCH, tier2_min_calls=1, tier3_min_calls=2, tuning_workers=0,
        cache_dirs=(tmp_path,),
    )  # fmt: skip
    slopes = inputs["alibi_slopes"]
    with Runtime(config=config) as rt:
        results = [
            rt.attention_backward(*_args(inputs), causal=True, alibi_slopes=slopes, **OPTIONS)
            for _ in range(3)
        ]
        calls = [r for r in rt.history() if r.event == "call"]
    assert [(r.op, r.tier) for r in calls] == [("attention_bwd", t) for t in (1, 2, 3)]
    assert calls[1].kernel_key == PROBLEM.generic_key(ARCH)
    assert calls[2].kernel_key == PROBLEM.kernel_key(ARCH)
    for key in (calls[1].kernel_key, calls[2].kernel_key):
        assert ".gqa" in key or ".hkv2" in key
        assert ".bshd" in key and "alibi" in key
    for grads in results:
        dq, dk, dv = grads
        assert dq.shape == inputs["q"].shape and dk.shape == dv.shape == inputs["k"].shape
        got = {"dq": dq, "dk": dk, "dv": dv}
        errors = grad_errors_ulps(PROBLEM, got, want)
        assert all(err <= GRAD_TOL_ULPS for err in errors.values()), errors


def test_each_variant_has_its_own_signature_and_kernel_keys() -> None:
    plain = AttentionBackwardProblem(2, 4, 45, 70, 24, dtype="bf16", causal=True)
    inputs = backward_inputs(plain, seed=0)
    args = _args(inputs)
    variants = [
        {},
        {"window_size": (8, -1)},
        {"softcap": 3.0},
        {"alibi_slopes": np.full(4, 0.25, dtype=np.float32)},
    ]
    keys = [attention_backward_key(*args, True, None, **v) for v in variants]
    assert len({k[5] for k in keys}) == len(variants)
    problems = [
        AttentionBackwardProblem(2, 4, 45, 70, 24, dtype="bf16", causal=True, **fields)
        for fields in ({}, {"window_left": 8}, {"softcap": 3.0}, {"alibi": "heads"})
    ]
    assert len({p.generic_key(ARCH) for p in problems}) == len(problems)
    assert len({p.kernel_key(ARCH) for p in problems}) == len(problems)


def test_bad_variant_arguments_are_one_line_errors() -> None:
    problem = AttentionBackwardProblem(1, 2, 20, 30, 16, dtype="fp16")
    args = _args(backward_inputs(problem, seed=0))
    with pytest.raises(ValueError, match=r"window_size=\(-2, 0\)"):
        attention_backward_key(*args, False, None, window_size=(-2, 0))
    with pytest.raises(ValueError, match="do has shape"):
        attention_backward_key(*args[:5], args[5][:, :1], False, None)
    bshd = [np.ascontiguousarray(np.swapaxes(x, 1, 2)) for x in args[:3]]
    with pytest.raises(ValueError, match="o has shape"):
        attention_backward_key(*bshd, args[3], args[4], args[5], False, None, layout="bshd")


def test_a_traced_variant_backward_becomes_its_own_tuning_task() -> None:
    inputs = backward_inputs(PROBLEM, seed=4)
    config = RuntimeConfig(device="cpu", tuning_workers=0)
    with Runtime(config=config) as rt:
        for _ in range(2):
            rt.attention_backward(
                *_args(inputs), causal=True, alibi_slopes=inputs["alibi_slopes"], **OPTIONS
            )
        records = [r for r in rt.history() if r.event == "call"]
    (problem,) = propose_tasks(rank(records, min_count=2), 1)
    assert problem == PROBLEM
    assert tune_command(problem).endswith(
        "--op attention_bwd --shape 2x4x45x70x24 --dtype bf16 --causal --gqa 4:2 --window 20,-1 "
        "--softcap 4 --alibi batch_heads --layout bshd"
    )
