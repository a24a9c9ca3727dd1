"""Runtime.attention_backward through tiers 1, 2 and 3 on the host emulator: gradients of every
tier against float64 at ragged, causal shapes no kernel was tuned on, and the trace of each."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache.store import KernelCache
from generator.grad_check import GRAD_TOL_ULPS, backward_inputs, grad_errors_ulps, reference_grads
from generator.render import template_hash
from runtime import Runtime, RuntimeConfig
from runtime.specialized import clear_memo
from templates.attention_bwd import space
from templates.registry import get_family
from tessera_core.types import AttentionBackwardProblem, TileConfig

ARCH = "sm_80"  # a GPU machine of another arch never tries to launch the placeholder cubin


def _tuned_entry(cache_dir: Path, problem: AttentionBackwardProblem, config: TileConfig) -> None:
    """What a finished tuning job leaves behind; the emulator needs only the config."""
    KernelCache(cache_dir=cache_dir).put(
        problem.kernel_key(ARCH),
        cubin=b"placeholder",
        ptx=None,
        metadata={
            "arch": ARCH,
            "problem": problem.to_dict(),
            "config": config.to_dict(),
            "template_hash": template_hash(get_family(problem.op)),
        },
    )


@pytest.fixture(autouse=True)
def _fresh_memo() -> None:
    clear_memo()


# Ragged lengths on both sides; seq_q > seq_kv leaves the first rows seeing no key (causal).
@pytest.mark.parametrize(
    ("shape", "dtype", "tuned"),
    [
        ((1, 2, 37, 53, 32), "fp16", space.tile(32, 32, 2, 1, 1)),  # deterministic dQ
        ((2, 1, 45, 29, 16), "bf16", space.tile(64, 32, 2, 2, 0)),  # atomic dQ
    ],
    ids=["fp16-sq37-skv53", "bf16-sq45-skv29"],
)
def test_backward_tiers_match_float64_and_are_traced(
    tmp_path: Path, shape: tuple[int, ...], dtype: str, tuned: TileConfig
) -> None:
    problem = AttentionBackwardProblem(*shape, dtype=dtype, causal=True)  # type: ignore[arg-type]
    inputs = backward_inputs(problem, seed=11)  # o, lse: the float64 forward's, rounded
    want = reference_grads(problem, inputs)
    _tuned_entry(tmp_path, problem, tuned)
    config = RuntimeConfig(
        device="emulator",
        arch=ARCH,
        tier2_min_calls=1,
        tier3_min_calls=2,
        tuning_workers=0,
        cache_dirs=(tmp_path,),
    )
    args = [inputs[name] for name in ("q", "k", "v", "o", "lse", "do")]
    with Runtime(config=config) as rt:
        results = [rt.attention_backward(*args, causal=True) for _ in range(3)]
        history = rt.history()
    calls = [r for r in history if r.event == "call"]
    assert [(r.op, r.tier) for r in calls] == [("attention_bwd", t) for t in (1, 2, 3)]
    assert calls[1].kernel_key == problem.generic_key(ARCH)
    assert calls[1].config == space.default_config(problem, ARCH).to_dict()
    assert calls[2].kernel_key == problem.kernel_key(ARCH)
    assert calls[2].config == tuned.to_dict()
    promotions = [r.tier for r in history if r.event == "promote" and r.op == "attention_bwd"]
    assert promotions == [2, 3]
    for call, grads in zip(calls, results, strict=True):
        got = dict(zip(("dq", "dk", "dv"), grads, strict=True))
        for name, array in got.items():
            assert array.dtype == inputs["q"].dtype, (call.tier, name)
        errors = grad_errors_ulps(problem, got, want)
        assert all(err <= GRAD_TOL_ULPS for err in errors.values()), (call.tier, errors)
