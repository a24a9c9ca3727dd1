"""Planted defects in the attention_bwd variants that the emulated float64 check must catch: a
window off by one in the backward mask, GQA's dK/dV written per query head instead of summed
into the KV head, GQA's query head mapped to the wrong KV head, softcap's gradient without the
(1 - tanh^2) factor."""

from __future__ import annotations

import dataclasses

import pytest

from generator import emulate_backward
from generator.grad_check import GRAD_TOL_ULPS, backward_inputs, grad_errors_ulps, reference_grads
from generator.render import render
from templates.attention_bwd import space
from templates.registry import get_family
from tessera_core.types import AttentionBackwardProblem

ARCH = "sm_90"
ATOMIC = space.tile(32, 32, 2, 2, 0)  # KV blocks only: each anchor below occurs once
DETERMINISTIC = space.tile(32, 32, 2, 2, 1)
WINDOW = AttentionBackwardProblem(1, 2, 77, 131, 32, dtype="fp16", window_left=20, window_right=7)
GQA = AttentionBackwardProblem(1, 4, 77, 131, 32, dtype="fp16", heads_kv=2)
SOFTCAP = AttentionBackwardProblem(1, 2, 77, 131, 32, dtype="fp16", softcap=2.0)

Edit = tuple[str, str]
DEFECTS: dict[str, tuple[AttentionBackwardProblem, object, tuple[Edit, ...]]] = {
    "window_off_by_one_in_the_backward_mask": (
        WINDOW,
        ATOMIC,
        (("causal_offset, window_left,", "causal_offset, window_left + 1,"),),
    ),
    "gqa_dkdv_written_per_query_head_not_summed": (
        GQA,
        ATOMIC,
        (
            ("if (IS_GQA && int(blockIdx.y) % heads_per_kv != 0) return;", ""),
            ("const int q_head0 = kv_head * heads_per_kv;", "const int q_head0 = blockIdx.y;"),
            (
                "const int q_heads_summed = IS_GQA ? heads_per_kv : 1;",
                "const int q_heads_summed = 1;",
            ),
        ),
    ),
    "gqa_query_head_reads_the_wrong_kv_head": (
        GQA,
        DETERMINISTIC,
        (("IS_GQA ? q_head / heads_per_kv : q_head", "IS_GQA ? q_head % heads_kv : q_head"),),
    ),
    "softcap_gradient_without_the_tanh_derivative": (
        SOFTCAP,
        ATOMIC,
        (("grad *= 1.0f - capped * capped;", ""),),
    ),
}


def _worst_error(
    problem: AttentionBackwardProblem, config: object, edits: tuple[Edit, ...]
) -> float:
    rendered = render(get_family("attention_bwd"), problem, config, arch=ARCH)  # type: ignore[arg-type]
    source = rendered.source
    for old, new in edits:
        assert source.count(old) == 1, f"defect anchor not found once: {old!r}"
        source = source.replace(old, new)
    rendered = dataclasses.replace(rendered, source=source)
    inputs = backward_inputs(problem, seed=4)
    run = emulate_backward.run_rendered_backward(rendered, problem, inputs)
    errors = grad_errors_ulps(problem, run.outputs, reference_grads(problem, inputs))
    return max(errors.values())


@pytest.mark.parametrize("problem", [WINDOW, GQA, SOFTCAP], ids=["window", "gqa", "softcap"])
def test_the_intact_kernels_pass(problem: AttentionBackwardProblem) -> None:
    assert _worst_error(problem, ATOMIC, ()) <= GRAD_TOL_ULPS


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_planted_defect_is_caught(defect: str) -> None:
    problem, config, edits = DEFECTS[defect]
    assert _worst_error(problem, config, edits) > GRAD_TOL_ULPS, f"{defect} went unnoticed"
