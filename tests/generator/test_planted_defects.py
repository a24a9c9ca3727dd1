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
from templates.attention.family import tensor_shapes
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
ATTENTION_CONFIG = TileConfig(64, 32, 16, 2, 2, options=(("q_in_regs", 1),))
# Q read from shared memory at every k-step; the causal problem with seq_q > seq_kv has query
# blocks whose rows see no key and skip the main loop.
Q_SMEM_CONFIG = TileConfig(64, 32, 16, 2, 2, options=(("q_in_regs", 0),))
NO_KEY_ROWS = AttentionProblem(1, 2, 197, 65, 64, causal=True)
GEMM = GemmProblem(67, 45, 200)
GEMM_CONFIG = TileConfig(block_m=32, block_n=32, block_k=16, num_warps=2, num_stages=2)
# Interior tiles (rows 0-63 x columns 0-63, vector loads) beside edge
# tiles, in grouped order: 3 x 3 tiles in one group of 3 rows (group_m=4 > 3). Two copy passes
# per operand tile, so a pass's row offset matters; K = 6 * 32 + 8, so the interior path's
# first k-tile is an 8-column residue.
GEMM_MIXED = GemmProblem(67, 72, 200)
GEMM_MIXED_CONFIG = TileConfig(
    block_m=32, block_n=32, block_k=32, num_warps=2, num_stages=3, options=(("group_m", 4),)
)

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
        totals = None
        if problem.varlen:
            totals = (int(inputs["cu_seqlens_q"][-1]), int(inputs["cu_seqlens_k"][-1]))
        shapes = tensor_shapes(problem, totals=totals)
        outputs = {"o": (shapes["o"], inputs["q"].dtype), "lse": (shapes["lse"], np.dtype("f4"))}
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
    [
        (ATTENTION, ATTENTION_CONFIG),
        (ATTENTION, Q_SMEM_CONFIG),
        (NO_KEY_ROWS, ATTENTION_CONFIG),
        (NO_KEY_ROWS, Q_SMEM_CONFIG),
        (GEMM, GEMM_CONFIG),
        (GEMM_MIXED, GEMM_MIXED_CONFIG),
    ],
    ids=[
        "attn",
        "attn-q-smem",
        "attn-no-key-rows",
        "attn-q-smem-no-key-rows",
        "gemm",
        "gemm-mixed",
    ],
)
def test_the_unmodified_kernels_pass(problem: Problem, config: TileConfig) -> None:
    assert outcome(problem, config, None) == "pass"


# The loop's one barrier, and the refill it protects (the stage tile j-1 used).
LOOP_WAIT = "tessera::cp_async_wait<NUM_STAGES - 2>();  // this thread's copies of tile j\n"
LOOP_BARRIER = (
    "    __syncthreads();  // tile j complete for every thread; every warp done with tile j-1\n"
)
REFILL = (
    "    const int ahead = j + NUM_STAGES - 1;\n"
    "    if (ahead < n_tiles) load_kv(ahead, ahead % NUM_STAGES);\n"
)


def refill_before_the_barrier(source: str) -> str:
    """Issue the refill of the stage tile j-1 used before the barrier that proves it free."""
    assert source.count(LOOP_BARRIER) == 1 and source.count(REFILL) == 1
    return source.replace(
        LOOP_BARRIER,
        REFILL.replace("const int ahead", "const int early").replace("ahead", "early")
        + LOOP_BARRIER,
    )


# Barriers in source order. q_in_regs=1: after the Q wait, the loop's one barrier, before the
# O copy. q_in_regs=0: the loop's one barrier, before the O staging, before the O copy.
ATTENTION_DEFECTS: dict[str, Mutation] = {
    "no-barrier-after-q-load": drop_barrier(0),
    "no-barrier-after-kv-wait": drop_barrier(1),
    "no-barrier-before-o-copy": drop_barrier(2),
    "refill-before-the-loop-barrier": refill_before_the_barrier,
    "no-cp-async-wait-in-loop": replace_once(LOOP_WAIT, "\n"),
    "q-fragment-row-shifted": replace_once(
        "const int row = me.warp_row0 + mt * MMA_M + (me.lane % 16);",
        "const int row = me.warp_row0 + mt * MMA_M + ((me.lane + 1) % 16);",
    ),
    "p-fragment-registers-swapped": replace_once(
        "p_frag[mt][0] = tessera::pack2<elem_t>(lo[0], lo[1]);",
        "p_frag[mt][0] = tessera::pack2<elem_t>(lo[2], lo[3]);",
    ),
    "v-fragment-column-shifted": replace_once(
        "const int col = dp * 16 + (pv_lane.lane >> 4) * 8;",
        "const int col = dp * 16 + ((pv_lane.lane >> 4) ^ 1) * 8;",
    ),
    "o-store-one-row-down": replace_once(
        "*reinterpret_cast<Chunk*>(o + (long long)(m0 + r) * q_row_stride + slot.col) =",
        "*reinterpret_cast<Chunk*>(o + (long long)(m0 + r + 1) * q_row_stride + slot.col) =",
    ),
}


@pytest.mark.parametrize("defect", sorted(ATTENTION_DEFECTS))
def test_attention_defect_is_caught(defect: str) -> None:
    result = outcome(ATTENTION, ATTENTION_CONFIG, ATTENTION_DEFECTS[defect])
    assert result != "pass", f"planted defect {defect} went unnoticed"


Q_SMEM_DEFECTS: dict[str, tuple[Problem, Mutation]] = {
    "no-barrier-after-kv-wait": (ATTENTION, drop_barrier(0)),
    "refill-before-the-loop-barrier": (ATTENTION, refill_before_the_barrier),
    "no-cp-async-wait-in-loop": (ATTENTION, replace_once(LOOP_WAIT, "\n")),
    "q-fragment-row-shifted": (
        ATTENTION,
        replace_once(
            "const int row = me.warp_row0 + mt * MMA_M + (me.lane % 16);",
            "const int row = me.warp_row0 + mt * MMA_M + ((me.lane + 1) % 16);",
        ),
    ),
    # A block whose rows see no key skips the loop; without this barrier another thread's
    # copy of Q lands on the O rows a warp has already staged.
    "no-barrier-before-o-staging": (NO_KEY_ROWS, drop_barrier(1)),
    "no-barrier-before-o-copy": (ATTENTION, drop_barrier(2)),
}


@pytest.mark.parametrize("defect", sorted(Q_SMEM_DEFECTS))
def test_q_in_shared_memory_defect_is_caught(defect: str) -> None:
    problem, mutate = Q_SMEM_DEFECTS[defect]
    result = outcome(problem, Q_SMEM_CONFIG, mutate)
    assert result != "pass", f"planted defect {defect} (q_in_regs=0) went unnoticed"


def move_refill_before_barrier(source: str) -> str:
    """Refill the previous iteration's stage before the barrier that proves it is consumed."""
    barrier = (
        "      __syncthreads();  // tile kt visible to every warp; every warp is done with tile"
        " kt - 1\n"
    )
    refill = (
        "      if (kt + NUM_STAGES - 1 < k_tiles)"
        " load_stage(kt + NUM_STAGES - 1, write.index, false);\n"
    )
    return replace_once(barrier + refill, refill + barrier)(source)


# Defects of the shared main loop, caught on both the ragged problem (every tile on the edge
# path) and the mixed one (interior and edge tiles).
GEMM_DEFECTS: dict[str, Mutation] = {
    "no-barrier-in-main-loop": drop_barrier(0),
    "stage-refilled-before-barrier": move_refill_before_barrier,
    "no-wait-for-the-current-tile": replace_once(
        "tessera::cp_async_wait<NUM_STAGES - 2>();", "tessera::cp_async_wait<NUM_STAGES - 1>();"
    ),
    "refill-into-the-stage-being-read": replace_once(
        "load_stage(kt + NUM_STAGES - 1, write.index, false);",
        "load_stage(kt + NUM_STAGES - 1, read.index, false);",
    ),
    "a-fragment-row-shifted": replace_once(
        "const int row = warp_m0 + mt * MMA_M + (lane % 16);",
        "const int row = warp_m0 + mt * MMA_M + ((lane + 1) % 16);",
    ),
    "b-fragment-column-shifted": replace_once(
        "const int col = warp_n0 + np * 16 + (lane >> 4) * 8;",
        "const int col = warp_n0 + np * 16 + ((lane >> 4) ^ 1) * 8;",
    ),
}
# Defects of the tile order and of the interior path: GEMM_MIXED exercises them.
GEMM_MIXED_DEFECTS: dict[str, Mutation] = {
    "group-row-wraps-at-group-m": replace_once(
        "return {first_m + in_group % group_rows, in_group / group_rows};",
        "return {first_m + in_group % GROUP_M, in_group / group_rows};",
    ),
    "group-column-steps-by-group-m": replace_once(
        "return {first_m + in_group % group_rows, in_group / group_rows};",
        "return {first_m + in_group % group_rows, in_group / GROUP_M};",
    ),
    "interior-path-for-edge-tiles": replace_once(
        "const bool interior = m0 + BLOCK_M <= M && n0 + BLOCK_N <= N;",
        "const bool interior = m0 + BLOCK_M <= M;",
    ),
    "edge-store-row-mask-off-by-8": replace_once(
        "if (CHECKED && row >= M) continue;", "if (row >= M + 8) continue;"
    ),
    "interior-a-pointer-not-advanced": replace_once("        a_src += k_len * a_k_stride;\n", ""),
    "interior-residue-step-is-a-full-tile": replace_once(
        "a_src += k_len * a_k_stride;", "a_src += BLOCK_K * a_k_stride;"
    ),
    "interior-residue-copies-unpredicated": replace_once(
        "const bool inside = full || (r < valid_rows && thread_col < valid_cols);",
        "const bool inside = true;",
    ),
    "interior-b-pointer-advanced-one-row": replace_once(
        "b_src += k_len * b_k_stride;", "b_src += (first ? k_len : 1) * b_k_stride;"
    ),
    "interior-second-pass-reuses-first-rows": replace_once(
        "inside ? src + pass * pass_stride : src", "inside ? src + (pass / 2) * pass_stride : src"
    ),
}


@pytest.mark.parametrize("defect", sorted(GEMM_DEFECTS))
@pytest.mark.parametrize(
    ("problem", "config"),
    [(GEMM, GEMM_CONFIG), (GEMM_MIXED, GEMM_MIXED_CONFIG)],
    ids=["ragged", "mixed"],
)
def test_gemm_defect_is_caught(problem: GemmProblem, config: TileConfig, defect: str) -> None:
    result = outcome(problem, config, GEMM_DEFECTS[defect])
    assert result != "pass", f"planted defect {defect} went unnoticed"


@pytest.mark.parametrize("defect", sorted(GEMM_MIXED_DEFECTS))
def test_gemm_order_and_interior_defect_is_caught(defect: str) -> None:
    result = outcome(GEMM_MIXED, GEMM_MIXED_CONFIG, GEMM_MIXED_DEFECTS[defect])
    assert result != "pass", f"planted defect {defect} went unnoticed"


# The LLM variants: a window whose first tile (key 92 for row 0) and right edge cross tiles of
# 32 keys, so whole tiles are skipped on both sides; 4 query heads on 2 KV heads; ALiBi and
# bshd, both with seq_q != seq_kv so the bottom-right alignment matters.
WINDOW = AttentionProblem(1, 2, 65, 197, 64, window_left=40, window_right=3)
GQA = AttentionProblem(2, 4, 65, 197, 64, heads_kv=2)
ALIBI = AttentionProblem(1, 2, 65, 197, 64, alibi="heads")
BSHD = AttentionProblem(2, 4, 65, 97, 64, heads_kv=2, layout="bshd")
VARLEN = AttentionProblem(3, 2, 65, 97, 64, layout="bshd", varlen=True, causal=True)
VARIANT_DEFECTS: dict[str, tuple[Problem, Mutation]] = {
    "window-left-edge-off-by-one": (
        WINDOW,
        replace_once(  # the mask (tessera/attention_mask.h) sees one key more on the left
            "p.window_left, p.window_right)) {", "p.window_left + 1, p.window_right)) {"
        ),
    ),
    "window-right-edge-off-by-one": (
        WINDOW,
        replace_once("p.window_left, p.window_right)) {", "p.window_left, p.window_right + 1)) {"),
    ),
    "window-skips-one-tile-too-many": (
        WINDOW,
        replace_once(
            "const int first_tile = kv_begin / BLOCK_N;",
            "const int first_tile = kv_begin / BLOCK_N + 1;",
        ),
    ),
    "window-tile-edges-left-unmasked": (
        WINDOW,
        replace_once("if (ragged || diagonal || window_edge) {", "if (ragged || diagonal) {"),
    ),
    "gqa-heads-interleaved": (
        GQA,
        replace_once("int(blockIdx.y) / (int(gridDim.y) / heads_kv)", "int(blockIdx.y) % heads_kv"),
    ),
    "gqa-kv-batch-stride-of-q-heads": (
        GQA,
        replace_once(
            "(long long)blockIdx.z * heads_kv + kv_head", "(long long)blockIdx.z * 4 + kv_head"
        ),
    ),
    "alibi-top-left-aligned": (
        ALIBI,
        replace_once(
            "alibi_bias(alibi_slope, row, col, causal_offset)",
            "alibi_bias(alibi_slope, row, col, 0)",
        ),
    ),
    "varlen-keys-start-at-the-query-offset": (
        VARLEN,
        replace_once(
            "const int kv_row0 = p.cu_seqlens_k[blockIdx.z];",
            "const int kv_row0 = p.cu_seqlens_q[blockIdx.z];",
        ),
    ),
    "varlen-lse-rows-of-the-first-sequence": (
        VARLEN,
        replace_once(
            "(long long)blockIdx.y * p.cu_seqlens_q[gridDim.z] + q_row0;",
            "(long long)blockIdx.y * p.cu_seqlens_q[gridDim.z];",
        ),
    ),
    "bshd-rows-one-head-apart": (
        BSHD,
        replace_once(
            "const int q_row_stride = int(gridDim.y) * HEAD_DIM;",
            "const int q_row_stride = HEAD_DIM;",
        ),
    ),
}


@pytest.mark.parametrize(
    "problem", [WINDOW, GQA, ALIBI, BSHD, VARLEN], ids=["window", "gqa", "alibi", "bshd", "varlen"]
)
def test_the_unmodified_variant_kernels_pass(problem: AttentionProblem) -> None:
    assert outcome(problem, Q_SMEM_CONFIG, None) == "pass"


@pytest.mark.parametrize("defect", sorted(VARIANT_DEFECTS))
def test_variant_defect_is_caught(defect: str) -> None:
    problem, mutate = VARIANT_DEFECTS[defect]
    result = outcome(problem, Q_SMEM_CONFIG, mutate)  # the variants' registers leave no room
    # for ATTENTION_CONFIG's Q fragments on sm_90
    assert result != "pass", f"planted defect {defect} went unnoticed"


def test_a_thread_leaving_before_a_barrier_is_named_with_kernel_block_and_line() -> None:
    result = outcome(
        ATTENTION,
        ATTENTION_CONFIG,
        replace_once(
            "  const float scale_log2 = LOGITS ? LOG2E : p.softmax_scale * LOG2E;",
            "  if (blockIdx.x == 1 && threadIdx.x == 33) return;\n"
            "  const float scale_log2 = LOGITS ? LOG2E : p.softmax_scale * LOG2E;",
        ),
    )
    assert result.startswith("emulator: kernel tessera_attention_fwd block (1,0,0): deadlock")
    assert re.search(r"__syncthreads\(\) at line \d+ is never reached by thread 33", result)


def test_a_misaligned_fragment_load_is_named() -> None:
    result = outcome(
        ATTENTION,
        ATTENTION_CONFIG,
        replace_once(
            "const int col = ks * MMA_K + (me.lane / 16) * 8;",
            "const int col = ks * MMA_K + (me.lane / 16) * 8 + 1;",
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
    # A plain read-modify-write computes the right sum on the emulator (blocks run in turn):
    # the atomic audit sees dQ elements change that no atomic add touched.
    "dq-plain-add-instead-of-atomic": (
        BACKWARD_CONFIG,
        replace_once(
            "tessera::atomic_add_f32(dq_row + t * MMA_N, dq_acc[mt][t][2 * h] * p.softmax_scale);",
            "dq_row[t * MMA_N] += dq_acc[mt][t][2 * h] * p.softmax_scale;",
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
            "do_tile, p.o + q_offset, lse_of(q_head));\n    __syncthreads();",
            "do_tile, p.o + q_offset, lse_of(q_head));",
        ),
    ),
    "causal-mask-off-by-one": (
        BACKWARD_CONFIG,
        replace_once(  # the diagonal of tessera/attention_mask.h's key_hidden one key right
            "key_hidden<CAUSAL, HAS_WINDOW>(m0 + c, key, seq_kv,",
            "key_hidden<CAUSAL, HAS_WINDOW>(m0 + c + 1, key, seq_kv,",
        ),
    ),
}


@pytest.mark.parametrize("defect", sorted(BACKWARD_DEFECTS))
def test_backward_defect_is_caught(defect: str) -> None:
    config, mutate = BACKWARD_DEFECTS[defect]
    result = backward_outcome(config, mutate)
    assert result != "pass", f"planted defect {defect} went unnoticed"
    if defect.startswith("dq-"):
        assert "without an atomic add" in result, result
