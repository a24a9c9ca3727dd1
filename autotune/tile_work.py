"""What one configuration's tiles execute per main-loop iteration: FLOPs, bytes, exps, instructions.

The cost model (autotune.cost_model) turns this into time. Quantities are per iteration of
one block (a KV tile for attention, a k-step of block_k for GEMM), with the iteration counts
of the grid alongside. The instruction mix comes from the compiled kernel's SASS main loop
when it is available (generator.sass.kernel_and_loop_counts) and from the analytical count
below otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from templates.gemm.space import warp_layout
from tessera_core.hardware import WARP_SIZE, ceil_div
from tessera_core.types import (
    DTYPE_BYTES,
    AttentionBackwardProblem,
    AttentionDecodeProblem,
    AttentionProblem,
    GemmProblem,
    Problem,
    TileConfig,
    dtype_bytes,
)

MMA_FLOPS = 2 * 16 * 8 * 16  # one HMMA.16816: mma.sync.m16n8k16
LDSM_X4_BYTES = 512  # ldmatrix .x4: four 8x8 16-bit matrices a warp
CP_ASYNC_BYTES = 16  # one LDGSTS.128 a thread
# Non-MMA FP32 operations per attention score: scale-and-subtract FMA, running max, row sum,
# and the exponent's argument (FlashAttention-2 section 3.1's non-matmul work); the SASS of
# the 128x64, d64 kernel has 276 FP32-pipe instructions per 2048 scores a warp (4.3).
SOFTMAX_FP32_OPS_PER_SCORE = 4
# Integer, address, predicate, barrier and branch instructions per warp and iteration that
# the analytical mix adds to the MMAs, loads and softmax (the same SASS: 66 for attention;
# today's GEMM k-loop: ~190 per 128 HMMA, the count); used only without SASS.
LOOP_OVERHEAD_INSTRUCTIONS = {"attention_fwd": 70, "attention_bwd": 90, "gemm": 60}
# The backward's FP32 work per score outside the MMAs: P = exp2(S * scale - LSE) (one FFMA),
# dS = P * (dP - D) (FADD, FMUL), the scale of dS, and the causal select (FlashAttention-2's
# backward recomputes P; an estimate, replaced by the SASS count when it is read).
BACKWARD_FP32_OPS_PER_SCORE = 5
# Matrix products of bm x bn x d per (query tile, KV tile) pair (FlashAttention-2's backward):
# S^T = K Q^T, dV += P^T dO, dP^T = V dO^T, dK += dS^T Q, dQ += dS K.
BACKWARD_MATMULS = 5
# The deterministic kernel's query blocks recompute S and dP before dQ = dS K.
QUERY_BLOCK_MATMULS = 3
# Barriers a main-loop iteration waits at, without SASS: one (the templates since issue 9).
DEFAULT_BARRIERS_PER_ITERATION = 1
# wgmma: m64 rows a warpgroup, 32 bytes of k an instruction (k16 for 16-bit, k32 for e4m3).
WGMMA_M = 64
WGMMA_K_BYTES = 32
# Per consumer warp and k-step beyond its wgmmas: mbarrier try_wait, fence, commit, wait,
# the empty-barrier arrive, stage advance and branch (the sm_90a SASS loop: about a dozen).
WGMMA_LOOP_INSTRUCTIONS = 12
TMA_PRODUCER_INSTRUCTIONS = 12  # per producer warp and stage: wait, expect_tx, 2 UTMALDG, ...
FP32_PIPE_OPCODES = ("FFMA", "FADD", "FMUL", "FMNMX", "FSEL", "FSETP", "FCHK")


@dataclass(frozen=True)
class TileWork:
    """Per-iteration work of one block, and how many iterations the grid runs."""

    blocks: int
    iterations: float  # main-loop iterations summed over blocks
    max_block_iterations: int  # the heaviest block (causal rows near the bottom)
    executed_flops: float  # all blocks, masked and ragged tiles included
    iteration_flops: float  # one block, one iteration
    iteration_smem_bytes: float  # ldmatrix reads of every warp plus the cp.async fill
    iteration_exps: float  # MUFU results (softmax exponentials)
    iteration_fp32_ops: float  # FP32-pipe lane operations outside the MMAs
    iteration_warp_instructions: float  # instructions every warp of the block issues, summed
    iteration_barriers: float
    dram_bytes: float
    l2_bytes: float  # re-reads served by L2 (K/V per query tile; A/B per tile row/column)
    instruction_source: str  # "sass" | "analytic"


def _attention(problem: AttentionProblem, config: TileConfig) -> TileWork:
    bm, bn, d, warps = config.block_m, config.block_n, problem.head_dim, config.num_warps
    m_tiles, n_tiles = ceil_div(problem.seq_q, bm), ceil_div(problem.seq_kv, bn)
    offset = problem.seq_kv - problem.seq_q  # causal masks align bottom-right (FlashAttention-2)
    kv_tiles = []
    for i in range(m_tiles):
        if problem.causal:
            last_row = min((i + 1) * bm, problem.seq_q) - 1
            kv_tiles.append(max(0, min(n_tiles, (last_row + offset) // bn + 1)))
        else:
            kv_tiles.append(n_tiles)
    heads = problem.batch * problem.heads
    rows_per_warp = bm // warps
    kv_tile_bytes = 2.0 * bn * d * DTYPE_BYTES
    # Every warp reads the whole K and V tile through ldmatrix (warps split the block along
    # M); with q_in_regs=0 it also re-reads its own Q rows every iteration (FA2-style).
    q_reads = 0.0 if config.option("q_in_regs", 1) else warps * rows_per_warp * d * DTYPE_BYTES
    smem = warps * kv_tile_bytes + q_reads + kv_tile_bytes
    scores = bm * bn
    fp32 = SOFTMAX_FP32_OPS_PER_SCORE * scores + bm * d  # softmax, then the O rescale
    exps = scores + bm  # one exp2 a score, one a row for the running-max correction
    mma = 4.0 * bm * bn * d / MMA_FLOPS
    instructions = (
        mma
        + (smem - kv_tile_bytes) / LDSM_X4_BYTES
        + kv_tile_bytes / CP_ASYNC_BYTES / WARP_SIZE
        + (fp32 + exps) / WARP_SIZE
        + scores / 2 / WARP_SIZE  # F2FP: pack two probabilities into 16 bits
        + warps * LOOP_OVERHEAD_INSTRUCTIONS["attention_fwd"]
    )
    total = heads * sum(kv_tiles)
    unique_kv = heads * 2.0 * problem.seq_kv * d * DTYPE_BYTES
    return TileWork(
        blocks=heads * m_tiles,
        iterations=float(total),
        max_block_iterations=max(kv_tiles),
        executed_flops=total * 4.0 * bm * bn * d,
        iteration_flops=4.0 * bm * bn * d,
        iteration_smem_bytes=smem,
        iteration_exps=exps,
        iteration_fp32_ops=fp32,
        iteration_warp_instructions=instructions,
        iteration_barriers=DEFAULT_BARRIERS_PER_ITERATION,
        dram_bytes=float(problem.io_bytes()),
        l2_bytes=max(0.0, total * kv_tile_bytes - unique_kv),
        instruction_source="analytic",
    )


def _visible_query_tiles(problem: AttentionProblem, bm: int, bn: int) -> list[int]:
    """Per KV block, how many query tiles see at least one of its keys (bottom-right causal)."""
    m_tiles, n_tiles = ceil_div(problem.seq_q, bm), ceil_div(problem.seq_kv, bn)
    if not problem.causal:
        return [m_tiles] * n_tiles
    offset = problem.seq_kv - problem.seq_q
    last_rows = [min((i + 1) * bm, problem.seq_q) - 1 for i in range(m_tiles)]
    return [sum(1 for r in last_rows if r + offset >= j * bn) for j in range(n_tiles)]


def _attention_bwd(problem: AttentionBackwardProblem, config: TileConfig) -> TileWork:
    """An iteration is one (query tile, KV tile) pair of a KV block (and, deterministic, one of a
    query block too); work per iteration is averaged over the two kinds of block."""
    bm, bn, d, warps = config.block_m, config.block_n, problem.head_dim, config.num_warps
    deterministic = bool(config.option("deterministic", 0))
    per_kv_block = _visible_query_tiles(problem, bm, bn)
    heads = problem.batch * problem.heads
    pairs = heads * sum(per_kv_block)
    q_tile_bytes = bm * d * DTYPE_BYTES
    fill = 2.0 * q_tile_bytes  # Q and dO by cp.async
    # Each warp reads the whole Q and dO tiles twice (as B of S^T and dP^T, then of dK, dV).
    reads = warps * 4.0 * q_tile_bytes
    matmuls: float = BACKWARD_MATMULS
    atomics = 0.0
    if deterministic:
        matmuls = (BACKWARD_MATMULS - 1 + QUERY_BLOCK_MATMULS) / 2  # averaged over 2x the pairs
    else:
        reads += bm * bn * DTYPE_BYTES * (1 + 1) + warps * bn * d * DTYPE_BYTES  # dS, then K
        atomics = bm * d  # one fp32 RED per dQ element
    flops = matmuls * 2.0 * bm * bn * d
    scores = bm * bn
    fp32 = BACKWARD_FP32_OPS_PER_SCORE * scores
    exps = float(scores)
    instructions = (
        flops / MMA_FLOPS
        + reads / LDSM_X4_BYTES
        + fill / CP_ASYNC_BYTES / WARP_SIZE
        + (fp32 + exps + atomics) / WARP_SIZE
        + scores / WARP_SIZE  # F2FP: P and dS packed into 16 bits
        + warps * LOOP_OVERHEAD_INSTRUCTIONS["attention_bwd"]
    )
    iterations = 2 * pairs if deterministic else pairs
    blocks = heads * len(per_kv_block)
    if deterministic:
        blocks += heads * ceil_div(problem.seq_q, bm)
    unique_q = heads * 2.0 * problem.seq_q * d * DTYPE_BYTES  # Q and dO
    # Q and dO re-read by every KV block, served by L2; atomic dQ adds travel to L2 too.
    l2 = max(0.0, pairs * fill - unique_q) + pairs * atomics * 4
    return TileWork(
        blocks=blocks,
        iterations=float(iterations),
        max_block_iterations=max(per_kv_block, default=0),
        executed_flops=iterations * flops,
        iteration_flops=flops,
        iteration_smem_bytes=reads + fill,
        iteration_exps=exps,
        iteration_fp32_ops=float(fp32),
        iteration_warp_instructions=instructions,
        iteration_barriers=2 if deterministic else 3,  # dS staged between two barriers
        dram_bytes=float(problem.io_bytes()),
        l2_bytes=l2,
        instruction_source="analytic",
    )


def _gemm(problem: GemmProblem, config: TileConfig, *, group_m: int | None = None) -> TileWork:
    bm, bn, bk = config.block_m, config.block_n, config.block_k
    m_tiles, n_tiles = ceil_div(problem.m, bm), ceil_div(problem.n, bn)
    k_steps = ceil_div(problem.k, bk)
    # The template's own warp grid; a config it cannot tile is modelled as one warp row.
    warps_m, warps_n = warp_layout(config) or (1, config.num_warps)
    fill = (bm + bn) * bk * DTYPE_BYTES
    # Each A row slice is read by the warps_n warps of its row, each B slice by warps_m warps.
    reads = (warps_n * bm + warps_m * bn) * bk * DTYPE_BYTES
    mma = 2.0 * bm * bn * bk / MMA_FLOPS
    instructions = (
        mma
        + reads / LDSM_X4_BYTES
        + fill / CP_ASYNC_BYTES / WARP_SIZE
        + config.num_warps * LOOP_OVERHEAD_INSTRUCTIONS["gemm"]
    )
    blocks = m_tiles * n_tiles
    a_reads = problem.m * problem.k * DTYPE_BYTES * n_tiles
    b_reads = problem.k * problem.n * DTYPE_BYTES * m_tiles
    unique = (problem.m * problem.k + problem.k * problem.n) * DTYPE_BYTES
    # Row-major block order streams all of B past every tile row; grouping group_m tile rows
    # (the GEMM's `group_m` option) keeps a group's B columns in L2 for group_m rows, so B's
    # re-reads that miss L2 shrink by that factor (A's are unchanged).
    group_m = max(1, group_m or config.option("group_m", 1))
    l2_misses = max(0.0, a_reads + b_reads / min(group_m, m_tiles) - unique)
    return TileWork(
        blocks=blocks,
        iterations=float(blocks * k_steps),
        max_block_iterations=k_steps,
        executed_flops=blocks * k_steps * 2.0 * bm * bn * bk,
        iteration_flops=2.0 * bm * bn * bk,
        iteration_smem_bytes=float(reads + fill),
        iteration_exps=0.0,
        iteration_fp32_ops=0.0,
        iteration_warp_instructions=instructions,
        iteration_barriers=DEFAULT_BARRIERS_PER_ITERATION,
        dram_bytes=float(problem.io_bytes()),
        l2_bytes=float(l2_misses),
        instruction_source="analytic",
    )


def _decode(problem: AttentionDecodeProblem, config: TileConfig) -> TileWork:
    """Split-KV decoding (templates/attention_decode): blocks are (split, KV head x packed-row
    block, batch); every block walks its split's share of the bucket's key tiles, each warp
    its slice of a tile's keys with all packed rows. Modelled at the full bucket length."""
    bm, bn, d, warps = config.block_m, config.block_n, problem.head_dim, config.num_warps
    splits = config.option("num_splits", 1)
    rows = problem.heads // problem.heads_kv * problem.seq_q
    groups = problem.batch * problem.heads_kv * ceil_div(rows, bm)
    n_tiles = ceil_div(problem.seq_kv, bn)
    per_split = ceil_div(n_tiles, splits)
    kv_tile_bytes = 2.0 * bn * d * DTYPE_BYTES
    # Each warp reads its own keys of K and V, and all of Q at every k-step.
    smem = kv_tile_bytes + warps * bm * d * DTYPE_BYTES + kv_tile_bytes
    scores = bm * bn
    fp32 = SOFTMAX_FP32_OPS_PER_SCORE * scores + warps * bm * d
    exps = scores + warps * bm
    mma = 4.0 * bm * bn * d / MMA_FLOPS
    instructions = (
        mma
        + (smem - kv_tile_bytes) / LDSM_X4_BYTES
        + kv_tile_bytes / CP_ASYNC_BYTES / WARP_SIZE
        + (fp32 + exps) / WARP_SIZE
        + scores / 2 / WARP_SIZE
        + warps * LOOP_OVERHEAD_INSTRUCTIONS["attention_fwd"]
    )
    total = groups * n_tiles
    unique_kv = problem.batch * problem.heads_kv * 2.0 * problem.seq_kv * d * DTYPE_BYTES
    # Splits write normalised fp32 partial O and LSE that the combining block reads back.
    partials = (
        0.0
        if splits == 1
        else 2.0 * splits * problem.batch * problem.heads * (problem.seq_q * (d + 1) * 4)
    )
    return TileWork(
        blocks=groups * splits,
        iterations=float(total),
        max_block_iterations=per_split,
        executed_flops=total * 4.0 * bm * bn * d,
        iteration_flops=4.0 * bm * bn * d,
        iteration_smem_bytes=smem,
        iteration_exps=exps,
        iteration_fp32_ops=fp32,
        iteration_warp_instructions=instructions,
        iteration_barriers=DEFAULT_BARRIERS_PER_ITERATION,
        dram_bytes=float(problem.io_bytes()) + partials,
        l2_bytes=max(0.0, total * kv_tile_bytes - unique_kv),
        instruction_source="analytic",
    )


def _gemm_sm90(problem: GemmProblem, config: TileConfig, dtype: str) -> TileWork:
    """gemm_sm90: TMA fills a stage (no thread copies it); each 64-row wgmma reads its A rows
    and the whole B tile straight from shared memory (no ldmatrix); tiles run in groups of
    GROUP_M row blocks."""
    from templates.gemm_sm90.space import GROUP_M, consumers

    work = _gemm(problem, config, group_m=GROUP_M)
    elem = dtype_bytes(dtype)  # type: ignore[arg-type]
    bm, bn, bk = config.block_m, config.block_n, config.block_k
    n_consumers = max(1, consumers(config))
    fill = (bm + bn) * bk * elem
    reads = (bm + (bm // WGMMA_M) * bn) * bk * elem
    # Per consumer warp: its warpgroup's wgmma (m64 x bn x k WGMMA_K each), the fence,
    # commit and wait; the producer's one elected thread issues two TMA loads and an
    # expect_tx per stage.
    wgmma_k = WGMMA_K_BYTES // elem
    wgmmas = (bm // n_consumers // WGMMA_M) * (bk // wgmma_k)
    consumer_instructions = 4 * n_consumers * (wgmmas + WGMMA_LOOP_INSTRUCTIONS)
    producer_instructions = 4 * TMA_PRODUCER_INSTRUCTIONS
    return replace(
        work,
        iteration_smem_bytes=float(fill + reads),
        iteration_warp_instructions=float(consumer_instructions + producer_instructions),
    )


def _attention_sm90(problem: AttentionProblem, config: TileConfig, dtype: str) -> TileWork:
    """attention_sm90 (FlashAttention-3's forward): TMA fills a K and a V tile per stage; each
    64-row consumer warpgroup's S = Q K^T wgmmas read its Q rows and the K tile from shared
    memory, its O += P V wgmmas the V tile (P stays in registers); the softmax is
    FlashAttention-2's per score. Iteration counts (causal tiles skipped) are _attention's."""
    from templates.attention_sm90.space import consumers

    work = _attention(problem, config)
    elem = dtype_bytes(dtype)  # type: ignore[arg-type]
    bm, bn, d = config.block_m, config.block_n, problem.head_dim
    n_consumers = max(1, consumers(config))
    kv_tile_bytes = 2.0 * bn * d * elem
    reads = bm * d * elem + n_consumers * kv_tile_bytes
    scores = bm * bn
    # Per consumer warp and KV tile: the S wgmmas (m64 n=bn, k WGMMA_K_BYTES / elem each) and
    # the P V wgmmas (m64 n=d), the fences, commits and waits; the softmax lane-ops and
    # exponentials of its rows, and the packing of P (two 16-bit or four e4m3 per register).
    wgmma_k = WGMMA_K_BYTES // elem
    wgmmas = d // wgmma_k + bn // wgmma_k
    softmax = (work.iteration_fp32_ops + work.iteration_exps + scores * elem / 4) / WARP_SIZE
    consumer_instructions = 4 * n_consumers * (wgmmas + 2 * WGMMA_LOOP_INSTRUCTIONS) + softmax
    producer_instructions = 4 * TMA_PRODUCER_INSTRUCTIONS
    unique_kv = problem.batch * problem.heads * 2.0 * problem.seq_kv * d * elem
    return replace(
        work,
        iteration_smem_bytes=float(kv_tile_bytes + reads),
        iteration_warp_instructions=float(consumer_instructions + producer_instructions),
        l2_bytes=max(0.0, work.iterations * kv_tile_bytes - unique_kv),
    )


def tile_work(
    problem: Problem, config: TileConfig, *, family: str | None = None, dtype: str | None = None
) -> TileWork:
    """The analytical work of `config` on `problem` in `family` (default: the op's own) with
    tensor inputs of `dtype` (default: the problem's) (instruction mix estimated, not read)."""
    if isinstance(problem, AttentionDecodeProblem):
        return _decode(problem, config)
    if isinstance(problem, AttentionBackwardProblem):
        return _attention_bwd(problem, config)
    if isinstance(problem, AttentionProblem) and family == "attention_sm90":
        return _attention_sm90(problem, config, dtype or problem.dtype)
    if isinstance(problem, AttentionProblem):
        return _attention(problem, config)
    if family == "gemm_sm90":
        return _gemm_sm90(problem, config, dtype or problem.dtype)
    return _gemm(problem, config)


def with_sass(work: TileWork, config: TileConfig, loop_counts: Mapping[str, int]) -> TileWork:
    """`work` with its instruction mix, MUFU and FP32 counts and barriers read from SASS.

    `loop_counts` is the main loop's histogram (generator.sass.main_loop), i.e. what one warp
    issues per trip. ptxas may unroll the loop, so a trip is `unroll` iterations, where
    unroll = round(HMMA in the body / HMMA a warp issues per iteration). Without HMMA in the
    body (no main loop found), or fewer than half an iteration's (a loop over part of an
    iteration, not the main loop), `work` is returned unchanged.
    """
    mma_per_warp = work.iteration_flops / MMA_FLOPS / config.num_warps
    hmma = loop_counts.get("HMMA", 0)
    if mma_per_warp <= 0 or hmma < mma_per_warp / 2:
        return work
    unroll = max(1, round(hmma / mma_per_warp))
    warps = config.num_warps
    per_iteration = {op: n / unroll for op, n in loop_counts.items()}
    fp32 = sum(per_iteration.get(op, 0.0) for op in FP32_PIPE_OPCODES)
    return replace(
        work,
        iteration_warp_instructions=warps * sum(per_iteration.values()),
        iteration_exps=warps * per_iteration.get("MUFU", 0.0) * WARP_SIZE,
        iteration_fp32_ops=warps * fp32 * WARP_SIZE,
        iteration_barriers=per_iteration.get("BAR", 0.0),
        instruction_source="sass",
    )
