"""Planted defects: break a rendered kernel source the way real bugs do and check the emulator or
the verifier catches it. Each case first checks the unmodified source passes, so a check that
fails everything cannot pass here either."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np
import pytest

from generator import emulator, verify
from generator.render import render
from templates.registry import get_family
from tessera_core.errors import EmulatorError
from tessera_core.types import (
    AttentionBackwardProblem,
    AttentionProblem,
    GemmProblem,
    Problem,
    TileConfig,
)

ARCH = "sm_90"
# Enough key tiles (block_n 32 -> 7 tiles) that every pipeline stage is refilled, two query
# blocks, two heads, a ragged end.
ATTENTION = AttentionProblem(1, 2, 65, 197, 64)
ATTENTION_CONFIG = TileConfig(block_m=64, block_n=32, block_k=16, num_warps=2, num_stages=2)
GEMM = GemmProblem(67, 45, 200)
GEMM_CONFIG = TileConfig(block_m=32, block_n=32, block_k=16, num_warps=2, num_stages=2)

Mutation = Callable[[str], str]


def replace_once(old: str, new: str) -> Mutation:
    def mutate(source: str) -> str:
        assert source.count(old) == 1, f"anchor {old!r} not unique in the template; update test"
        return source.replace(old, new)

    return mutate


def drop_barrier(index: int) -> Mutation:
    def mutate(source: str) -> str:
        found = list(re.finditer(r"__syncthreads\(\);", source))
        assert len(found) > index, "the template has fewer barriers than this test expects"
        hit = found[index]
        return source[: hit.start()] + source[hit.end() :]

    return mutate


def outcome(problem: Problem, config: TileConfig, mutate: Mutation | None) -> str:
    """'pass', or why the (mutated) kernel was rejected."""
    rendered = render(get_family(problem.family), problem, config, specialized=False, arch=ARCH)
    if mutate is not None:
        source = mutate(rendered.source)
        assert source != rendered.source
        rendered = dataclasses.replace(rendered, source=source)
    inputs = verify.random_inputs(problem, seed=1)
    outputs: dict[str, tuple[tuple[int, ...], np.dtype]]
    if isinstance(problem, AttentionProblem):
        b, h, sq, d = problem.batch, problem.heads, problem.seq_q, problem.head_dim
        outputs = {"o": ((b, h, sq, d), inputs["q"].dtype), "lse": ((b, h, sq), np.dtype("f4"))}
    else:
        outputs = {"c": ((problem.m, problem.n), inputs["a"].dtype)}
    try:
        run = emulator.run_rendered(rendered, inputs=inputs, outputs=outputs)
    except EmulatorError as exc:
        return f"emulator: {exc}"
    passed, _, _, reason = verify.compare(problem, run.outputs, verify.reference(problem, inputs))
    return "pass" if passed else f"verifier: {reason}"


@pytest.mark.parametrize(
    ("problem", "config"),
    [(ATTENTION, ATTENTION_CONFIG), (GEMM, GEMM_CONFIG)],
    ids=["attn", "gemm"],
)
def test_the_unmodified_kernels_pass(problem: Problem, config: TileConfig) -> None:
    assert outcome(problem, config, None) == "pass"


ATTENTION_DEFECTS: dict[str, Mutation] = {
    "no-barrier-after-q-load": drop_barrier(0),
    "no-barrier-after-kv-wait": drop_barrier(1),
    "no-barrier-before-stage-refill": drop_barrier(2),
    "no-cp-async-wait-in-loop": replace_once(
        "tessera::cp_async_wait<NUM_STAGES - 1>();\n    __syncthreads();\n    const elem_t* k_tile",
        "__syncthreads();\n    const elem_t* k_tile",
    ),
    "q-fragment-row-shifted": replace_once(
        "const int row = warp_row0 + mt * MMA_M + (lane % 16);",
        "const int row = warp_row0 + mt * MMA_M + ((lane + 1) % 16);",
    ),
    "p-fragment-registers-swapped": replace_once(
        "tessera::pack2<elem_t>(lo[0], lo[1]), tessera::pack2<elem_t>(lo[2], lo[3]),",
        "tessera::pack2<elem_t>(lo[2], lo[3]), tessera::pack2<elem_t>(lo[0], lo[1]),",
    ),
    "v-fragment-column-shifted": replace_once(
        "const int col = dp * 16 + (lane >> 4) * 8;",
        "const int col = dp * 16 + ((lane >> 4) ^ 1) * 8;",
    ),
    "o-store-one-row-down": replace_once(
        "*reinterpret_cast<Chunk*>(o + (long long)(m0 + r) * HEAD_DIM + chunk_col) =",
        "*reinterpret_cast<Chunk*>(o + (long long)(m0 + r + 1) * HEAD_DIM + chunk_col) =",
    ),
}


@pytest.mark.parametrize("defect", sorted(ATTENTION_DEFECTS))
def test_attention_defect_is_caught(defect: str) -> None:
    result = outcome(ATTENTION, ATTENTION_CONFIG, ATTENTION_DEFECTS[defect])
    assert result != "pass", f"planted defect {defect} went unnoticed"


GEMM_DEFECTS: dict[str, Mutation] = {
    "no-barrier-after-wait": drop_barrier(0),
    "no-barrier-before-stage-refill": drop_barrier(1),
    "a-fragment-row-shifted": replace_once(
        "const int row = warp_m0 + mt * MMA_M + (lane % 16);",
        "const int row = warp_m0 + mt * MMA_M + ((lane + 1) % 16);",
    ),
    "b-fragment-column-shifted": replace_once(
        "const int col = warp_n0 + np * 16 + (lane >> 4) * 8;",
        "const int col = warp_n0 + np * 16 + ((lane >> 4) ^ 1) * 8;",
    ),
}


@pytest.mark.parametrize("defect", sorted(GEMM_DEFECTS))
def test_gemm_defect_is_caught(defect: str) -> None:
    result = outcome(GEMM, GEMM_CONFIG, GEMM_DEFECTS[defect])
    assert result != "pass", f"planted defect {defect} went unnoticed"


def test_a_thread_leaving_before_a_barrier_is_named_with_kernel_block_and_line() -> None:
    result = outcome(
        ATTENTION,
        ATTENTION_CONFIG,
        replace_once(
            "const int tid = threadIdx.x;",
            "const int tid = threadIdx.x;\n  if (blockIdx.x == 1 && tid == 33) return;",
        ),
    )
    assert result.startswith("emulator: kernel tessera_attention_fwd block (1,0,0): deadlock")
    assert re.search(r"__syncthreads\(\) at line \d+ is never reached by thread 33", result)


def test_a_misaligned_fragment_load_is_named() -> None:
    result = outcome(
        ATTENTION,
        ATTENTION_CONFIG,
        replace_once(
            "const int col = ks * MMA_K + (lane / 16) * 8;",
            "const int col = ks * MMA_K + (lane / 16) * 8 + 1;",
        ),
    )
    assert "ldmatrix: lane 0 row address" in result and "not 16-byte aligned" in result


# attention_bwd: several KV blocks add into the same dQ rows (block_n 32 -> 4 KV blocks), two
# query tiles per KV block, ragged ends, causal.
BACKWARD = AttentionBackwardProblem(1, 2, 65, 97, 64, causal=True)
BACKWARD_CONFIG = TileConfig(64, 32, 16, 2, 2, options=(("deterministic", 0),))
BACKWARD_DETERMINISTIC = TileConfig(64, 32, 16, 2, 2, options=(("deterministic", 1),))


def backward_outcome(config: TileConfig, mutate: Mutation | None) -> str:
    """'pass', or why the (mutated) backward kernel was rejected (any gradient > 8u)."""
    from generator.grad_check import (
        GRAD_TOL_ULPS,
        backward_inputs,
        grad_errors_ulps,
        reference_grads,
    )
    from templates.attention_bwd.space import deterministic

    rendered = render(get_family("attention_bwd"), BACKWARD, config, specialized=False, arch=ARCH)
    if mutate is not None:
        source = mutate(rendered.source)
        assert source != rendered.source
        rendered = dataclasses.replace(rendered, source=source)
    inputs = backward_inputs(BACKWARD, seed=1)
    q, k = inputs["q"], inputs["k"]
    try:
        run = emulator.run_rendered(
            rendered,
            inputs={
                **{n: inputs[n] for n in ("q", "k", "v", "o", "lse")},
                "dout": inputs["do"],
            },
            outputs={
                "dq": (q.shape, np.dtype("f4")),
                "dk": (k.shape, k.dtype),
                "dv": (k.shape, k.dtype),
            },
            accumulators=() if deterministic(config) else ("dq",),
        )
    except EmulatorError as exc:
        return f"emulator: {exc}"
    errors = grad_errors_ulps(BACKWARD, run.outputs, reference_grads(BACKWARD, inputs))
    bad = {name: err for name, err in errors.items() if not err <= GRAD_TOL_ULPS}
    return "pass" if not bad else f"verifier: {bad}"


@pytest.mark.parametrize("config", [BACKWARD_CONFIG, BACKWARD_DETERMINISTIC], ids=str)
def test_the_unmodified_backward_kernel_passes(config: TileConfig) -> None:
    assert backward_outcome(config, None) == "pass"


BACKWARD_DEFECTS: dict[str, tuple[TileConfig, Mutation]] = {
    "dropped-lse-rescale": (
        BACKWARD_CONFIG,
        replace_once(
            "st_acc[kt][mc][2 * h + e] * scale_log2 - col_lse_log2",
            "st_acc[kt][mc][2 * h + e] * scale_log2",
        ),
    ),
    "dropped-lse-rescale-dq-pass": (
        BACKWARD_DETERMINISTIC,
        replace_once(
            "s_acc[mt][nt][i] * scale_log2 - row_lse_log2", "s_acc[mt][nt][i] * scale_log2"
        ),
    ),
    "dq-store-instead-of-atomic-add": (
        BACKWARD_CONFIG,
        replace_once(
            "tessera::atomic_add_f32(dq_row + t * MMA_N, dq_acc[mt][t][2 * h] * p.softmax_scale);",
            "dq_row[t * MMA_N] = dq_acc[mt][t][2 * h] * p.softmax_scale;",
        ),
    ),
    "ds-without-d": (
        BACKWARD_CONFIG,
        replace_once(
            "prob * (dpt_acc[kt][mc][2 * h + e] - col_delta)", "prob * dpt_acc[kt][mc][2 * h + e]"
        ),
    ),
    "ds-without-d-dq-pass": (
        BACKWARD_DETERMINISTIC,
        replace_once("prob * (dp_acc[mt][nt][i] - row_delta)", "prob * dp_acc[mt][nt][i]"),
    ),
    "no-barrier-before-ds-read": (
        BACKWARD_CONFIG,
        replace_once(
            "    __syncthreads();\n    const int row0 = warp * QUERY_TILES * MMA_M;",
            "    const int row0 = warp * QUERY_TILES * MMA_M;",
        ),
    ),
    "no-barrier-after-row-stats": (
        BACKWARD_CONFIG,
        replace_once(
            "    load_row_stats(m0, do_tile);\n    __syncthreads();",
            "    load_row_stats(m0, do_tile);",
        ),
    ),
    "causal-mask-off-by-one": (
        BACKWARD_CONFIG,
        replace_once(
            "(CAUSAL && key > m0 + c + causal_offset)",
            "(CAUSAL && key > m0 + c + causal_offset + 1)",
        ),
    ),
}


@pytest.mark.parametrize("defect", sorted(BACKWARD_DEFECTS))
def test_backward_defect_is_caught(defect: str) -> None:
    config, mutate = BACKWARD_DEFECTS[defect]
    result = backward_outcome(config, mutate)
    assert result != "pass", f"planted defect {defect} went unnoticed"
