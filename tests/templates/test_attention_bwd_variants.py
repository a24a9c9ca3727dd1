"""The attention_bwd kernel's variants (GQA/MQA, windows, softcap, ALiBi, bshd, padded head dims,
head dims above 128 split over several KV blocks) on the host emulator at ragged shapes (seq_q
77, seq_k 131), against float64 gradients.

Every check draws fresh inputs, runs with outputs poisoned (NaN; dQ zeroed where it is added
atomically) and bounds the normwise relative error of dQ, dK and dV by GRAD_TOL_ULPS units of
the dtype's roundoff (8u: fp16 0.0039, bf16 0.031). The chained test feeds the emulated
forward's O and LSE to the backward (fwd + bwd, both kernels). A small sample runs by default;
every valid configuration of each variant is behind `slow`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from generator import emulate_backward, emulator
from generator.grad_check import (
    GRAD_TOL_ULPS,
    UNIT_ROUNDOFF,
    backward_inputs,
    emulated_errors,
    grad_errors_ulps,
    reference_grads,
)
from templates.attention_bwd import space
from tessera_core.types import AttentionBackwardProblem, AttentionProblem, TileConfig

ARCH = "sm_90"
SEQ_Q, SEQ_KV = 77, 131  # ragged in both, seq_kv > seq_q (the bottom-right offset is 54)


def _problem(**fields: object) -> AttentionBackwardProblem:
    base: dict[str, object] = {"batch": 1, "heads": 2, "seq_q": SEQ_Q, "seq_kv": SEQ_KV}
    base.update(head_dim=32, dtype="fp16")
    base.update(fields)
    return AttentionBackwardProblem(**base)  # type: ignore[arg-type]


VARIANTS: dict[str, AttentionBackwardProblem] = {
    "gqa": _problem(heads=4, heads_kv=2),
    "mqa_causal": _problem(heads=4, heads_kv=1, causal=True, dtype="bf16"),
    "window": _problem(window_left=20, window_right=7),
    "window_causal": _problem(window_left=30, causal=True, dtype="bf16"),
    "window_left_only": _problem(window_left=5, window_right=-1),
    "softcap": _problem(softcap=2.0),
    "softcap_causal": _problem(softcap=5.0, causal=True, dtype="bf16"),
    "alibi_heads": _problem(alibi="heads", causal=True),
    "alibi_batch_heads": _problem(batch=2, alibi="batch_heads", dtype="bf16"),
    "bshd": _problem(batch=2, heads=4, heads_kv=2, layout="bshd"),
    "head_dim_40": _problem(head_dim=40),
    "head_dim_120": _problem(head_dim=120, causal=True, dtype="bf16"),
    "head_dim_136_gqa": _problem(head_dim=136, heads=4, heads_kv=2, causal=True),  # 2 parts
    "head_dim_256": _problem(head_dim=256, dtype="bf16"),
    "head_dim_200_softcap_alibi": _problem(head_dim=200, softcap=4.0, alibi="heads"),  # 3 parts
    "everything": _problem(
        batch=2,
        heads=4,
        heads_kv=2,
        layout="bshd",
        window_left=40,
        window_right=3,
        softcap=3.0,
        alibi="batch_heads",
        head_dim=24,
    ),
}


def _check(problem: AttentionBackwardProblem, config: TileConfig, seed: int = 0) -> None:
    errors = emulated_errors(problem, config, arch=ARCH, seed=seed)
    assert all(err <= GRAD_TOL_ULPS for err in errors.values()), (str(config), errors)


# The default sample: every variant's default configuration (atomic dQ), and for these the
# first deterministic one too (softcap above head_dim 160 has none: its query blocks spill).
DETERMINISTIC_SAMPLE = ("gqa", "window_causal", "softcap", "alibi_batch_heads", "head_dim_136_gqa")


def _sample(name: str) -> list[TileConfig]:
    problem = VARIANTS[name]
    configs = [space.default_config(problem, ARCH)]
    if name in DETERMINISTIC_SAMPLE:
        valid = space.SPACE.valid_configs(problem, ARCH)
        configs += [c for c in valid if space.deterministic(c)][:1]
    return configs


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_default_sample_matches_float64(name: str) -> None:
    configs = _sample(name)
    assert len(configs) == (2 if name in DETERMINISTIC_SAMPLE else 1)
    for seed, config in enumerate(configs):
        _check(VARIANTS[name], config, seed=seed)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_valid_config_matches_float64(name: str) -> None:
    problem = VARIANTS[name]
    configs = space.SPACE.valid_configs(problem, ARCH)
    assert len(configs) >= 2
    for seed, config in enumerate(configs):
        _check(problem, config, seed=seed)


@pytest.mark.parametrize("name", ["window_causal", "alibi_batch_heads", "everything"])
def test_forward_then_backward_on_the_emulator(name: str) -> None:
    problem = VARIANTS[name]
    inputs = backward_inputs(problem, seed=5)  # o, lse: float64-accurate; replaced below
    forward = AttentionProblem(
        **{f.name: getattr(problem, f.name) for f in dataclasses.fields(AttentionProblem)}
    )
    run = emulator.run_attention_problem(
        forward, inputs["q"], inputs["k"], inputs["v"], alibi_slopes=inputs.get("alibi_slopes"),
        arch=ARCH,
    )  # fmt: skip
    u = UNIT_ROUNDOFF[problem.dtype]
    o_error = np.linalg.norm(run.outputs["o"].astype(np.float64) - inputs["o"].astype(np.float64))
    assert o_error / np.linalg.norm(inputs["o"].astype(np.float64)) <= 4 * u
    expected = reference_grads(problem, inputs)  # from the float64 forward
    chained = {**inputs, "o": run.outputs["o"], "lse": run.outputs["lse"]}
    backward = emulate_backward.run_attention_backward_problem(problem, chained, arch=ARCH)
    errors = grad_errors_ulps(problem, backward.outputs, expected)
    assert all(err <= GRAD_TOL_ULPS for err in errors.values()), errors


def test_gqa_gradients_come_back_in_the_kv_heads_shape() -> None:
    problem = VARIANTS["bshd"]
    inputs = backward_inputs(problem, seed=1)
    dq, dk, dv = emulate_backward.run_attention_backward(
        inputs["q"], inputs["k"], inputs["v"], inputs["o"], inputs["lse"], inputs["do"],
        layout="bshd", arch=ARCH,
    )  # fmt: skip
    assert dq.shape == inputs["q"].shape and dq.dtype == inputs["q"].dtype
    assert dk.shape == dv.shape == inputs["k"].shape == (2, SEQ_KV, 2, 32)
    ref = reference_grads(problem, inputs)
    for got, name in ((dq, "dq"), (dk, "dk"), (dv, "dv")):
        err = np.linalg.norm(got.astype(np.float64) - ref[name]) / np.linalg.norm(ref[name])
        assert err <= GRAD_TOL_ULPS * UNIT_ROUNDOFF["fp16"], (name, err)


def test_a_window_that_hides_whole_key_tiles_leaves_their_gradients_zero() -> None:
    # Keys 0..39 are left of every row's window (row 0 sees keys 54 - 10 = 44 .. 54).
    problem = _problem(window_left=10, window_right=0)
    inputs = backward_inputs(problem, seed=3)
    run = emulate_backward.run_attention_backward_problem(
        problem, inputs, config=space.tile(32, 32, 2, 2, 0), arch=ARCH
    )
    assert not np.any(run.outputs["dk"][:, :, :40].astype(np.float32))
    assert not np.any(run.outputs["dv"][:, :, :40].astype(np.float32))
    errors = grad_errors_ulps(problem, run.outputs, reference_grads(problem, inputs))
    assert all(err <= GRAD_TOL_ULPS for err in errors.values()), errors
