"""An analytical kernel time estimate (the `model` objective) from problem, tiles, resources, arch.

The estimate is a roofline per SM with the losses a tile configuration causes:

- compute: the FLOPs the tiles actually execute (ragged last tiles run in full; causal tiles
  above the diagonal are skipped, diagonal ones run in full) at the arch's dense tensor peak
  (shared/reference/hardware.md) times the `mma.sync` ceiling (about 2/3 of peak on sm_90,
  which `mma.sync` cannot drive like wgmma; FlashAttention-2 reaches 73% on sm_80), or the
  shared-memory bandwidth if that binds first (mma.sync operands come through ldmatrix: every
  warp re-reads the K/V tile, so few rows a warp means many bytes a FLOP), divided by a
  latency-hiding factor that grows with resident warps and pipeline stages;
- attention adds the softmax's exponentials on the special-function units (16 a clock per SM);
- memory: the bytes the tiles move; first touches come from DRAM at the peak bandwidth,
  re-reads (K/V per Q tile; A per N-tile column, B per M-tile row) from L2 at a multiple of it;
- occupancy from the real ptxas registers and shared memory -> active blocks per SM;
  waves = ceil(blocks / (SMs * active blocks)); the busiest SM's block count sets the time, so
  a grid that leaves SMs idle is slow;
- a fixed cost per main-loop iteration that tensor cores cannot hide: the block's barriers
  and, for attention, the FP32 softmax work on every score (scale, max, exp argument, sum,
  convert) and the rescale of the O accumulator; small block_n (attention) or block_k (gemm)
  pay it more often for the same FLOPs;
- a fixed cost per block (prologue loads, pipeline fill, epilogue) and per launch;
- spills: each spilled byte a thread stores or loads slows its inner loop (local memory).

Every constant below is an assumption with its source named; the model ranks configurations,
it does not predict times to better than a small factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from autotune.occupancy import Occupancy, occupancy
from templates.gemm.space import warp_layout
from tessera_core.hardware import arch_spec, ceil_div
from tessera_core.types import DTYPE_BYTES, AttentionProblem, GemmProblem, Problem, TileConfig

# Best fraction of the dense tensor peak an mma.sync kernel reaches (hardware.md: "mma.sync
# alone reaches roughly two thirds of the H100 peak"; FlashAttention-2 on A100: 73% of peak).
MMA_SYNC_PEAK_FRACTION = {"sm_80": 0.75, "sm_86": 0.75, "sm_89": 0.75, "sm_90": 2.0 / 3.0}
# Clock at which each reference GPU's tensor peak is quoted (vendor boost clocks, GHz).
BOOST_CLOCK_GHZ = {"sm_80": 1.41, "sm_86": 1.74, "sm_89": 2.52, "sm_90": 1.83}
EXP_PER_CLOCK_PER_SM = 16  # MUFU.EX2 throughput on sm_80..sm_90 (CUDA guide, arithmetic table)
SOFTMAX_EXPS_PER_SCORE = 1.0  # one exp2 per score; the row max/sum rescale is amortised
# Shared-memory bandwidth: 32 banks x 4 bytes a clock per SM (CUDA guide, shared memory).
# mma.sync operands come through ldmatrix from shared memory, so a warp tile with few rows
# re-reads K/V (or A/B) often per MMA and the SM is bound by this, not by the tensor cores.
SMEM_BYTES_PER_CLOCK_PER_SM = 128
# Latency hiding p / (p + P_HALF) with p = resident warps * stage factor: 4 warps and one stage
# hide 2/3 of the latency, 16 warps with 3 stages ~95% (Volkov's occupancy-vs-ILP argument).
LATENCY_HALF_WARPS = 2.0
STAGE_GAIN = 0.5  # each extra pipeline stage counts as half a warp's worth of parallelism...
MAX_STAGE_FACTOR = 2.0  # ...up to double; more stages only cost shared memory
L2_BANDWIDTH_MULTIPLE = 3.0  # L2 re-read bandwidth / DRAM bandwidth (H100 ~10 TB/s vs 3.35)
BLOCK_OVERHEAD_US = 1.5  # prologue loads + pipeline fill + epilogue store of one block
LAUNCH_OVERHEAD_US = 3.0  # driver launch latency
SPILL_SLOWDOWN_PER_BYTE = 0.01  # +1% inner-loop time per spilled byte a thread stores or loads
# Per main-loop iteration: two __syncthreads (stage refill, stage reuse) at ~40 clocks each
# when warps arrive together (microbenchmarks of bar.sync latency on sm_80/sm_90).
BARRIERS_PER_ITERATION = 2
BARRIER_CLOCKS = 40
FP32_OPS_PER_CLOCK_PER_SM = 128  # FP32 lanes per SM on sm_80..sm_90 (CUDA guide, arithmetic)
# FP32 operations per attention score outside the MMA: scale-and-subtract FMA, running max,
# row sum, convert to 16 bits (FlashAttention-2 section 3.1 counts these as the non-matmul work).
SOFTMAX_FP32_OPS_PER_SCORE = 4


class ResourceUsage(Protocol):
    """What ptxas reports for one compiled kernel (generator.compile.Resources)."""

    registers: int
    static_smem_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int


@dataclass(frozen=True)
class CostEstimate:
    """The model's time and the terms it came from, for explanations."""

    time_ms: float
    compute_ms: float
    memory_ms: float
    overhead_ms: float
    waves: int
    blocks: int
    occupancy: float
    active_blocks_per_sm: int
    efficiency: float  # achieved fraction of the arch's dense tensor peak on useful FLOPs
    wasted_fraction: float  # executed FLOPs that are not useful (ragged or masked tiles)
    limiter: str  # what bounds active blocks per SM
    bound: str  # "compute" | "memory"

    def to_dict(self) -> dict[str, float | int | str]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Work:
    """What a kernel's tiles execute and move, independent of occupancy."""

    blocks: int
    executed_flops: float
    max_block_flops: float  # the heaviest block (causal rows near the bottom)
    dram_bytes: float
    l2_bytes: float
    scores: float  # softmax elements (attention only)
    smem_bytes: float  # shared-memory traffic: cp.async fills plus every warp's ldmatrix reads
    iterations: float  # main-loop iterations summed over blocks (KV tiles / K steps)
    iteration_fp32_ops: float  # non-MMA FP32 operations of one iteration of one block


def _attention_work(problem: AttentionProblem, config: TileConfig) -> _Work:
    bm, bn, d = config.block_m, config.block_n, problem.head_dim
    m_tiles, n_tiles = ceil_div(problem.seq_q, bm), ceil_div(problem.seq_kv, bn)
    offset = problem.seq_kv - problem.seq_q  # causal masks align bottom-right (FlashAttention-2)
    kv_tiles_per_row = []
    for i in range(m_tiles):
        if problem.causal:
            last_row = min((i + 1) * bm, problem.seq_q) - 1
            needed = max(0, min(n_tiles, (last_row + offset) // bn + 1))
        else:
            needed = n_tiles
        kv_tiles_per_row.append(needed)
    heads = problem.batch * problem.heads
    tile_flops = 4.0 * bm * bn * d  # S = Q K^T and O += P V
    kv_tile_bytes = 2.0 * bn * d * DTYPE_BYTES
    kv_reads = heads * sum(kv_tiles_per_row) * kv_tile_bytes
    unique_kv = heads * 2.0 * problem.seq_kv * d * DTYPE_BYTES
    return _Work(
        blocks=heads * m_tiles,
        executed_flops=heads * sum(kv_tiles_per_row) * tile_flops,
        max_block_flops=max(kv_tiles_per_row) * tile_flops,
        dram_bytes=float(problem.io_bytes()),
        l2_bytes=max(0.0, kv_reads - unique_kv),
        scores=heads * sum(kv_tiles_per_row) * bm * bn,
        iterations=heads * sum(kv_tiles_per_row),
        # Softmax on the bm x bn scores, then the O accumulator (bm x d) rescaled once.
        iteration_fp32_ops=SOFTMAX_FP32_OPS_PER_SCORE * bm * bn + bm * d,
        # Warps split the block along M, so each warp reads every K and V tile (ldmatrix);
        # the block fills each tile once (cp.async). Q is read once into registers.
        smem_bytes=heads
        * (
            sum(kv_tiles_per_row) * (config.num_warps + 1) * kv_tile_bytes
            + m_tiles * 2.0 * bm * d * DTYPE_BYTES
        ),
    )


def _gemm_work(problem: GemmProblem, config: TileConfig) -> _Work:
    bm, bn, bk = config.block_m, config.block_n, config.block_k
    m_tiles, n_tiles = ceil_div(problem.m, bm), ceil_div(problem.n, bn)
    k_padded = ceil_div(problem.k, bk) * bk
    block_flops = 2.0 * bm * bn * k_padded
    a_reads = problem.m * problem.k * DTYPE_BYTES * n_tiles  # A re-read per N-tile column
    b_reads = problem.k * problem.n * DTYPE_BYTES * m_tiles  # B re-read per M-tile row
    unique = (problem.m * problem.k + problem.k * problem.n) * DTYPE_BYTES
    # The template's own warp grid (templates.gemm.space.warp_layout); each A row slice is
    # read by the warps_n warps of its row, each B column slice by warps_m warps. A config the
    # template cannot tile is modelled as the near-square grid it would need.
    layout = warp_layout(config)
    if layout is None:
        near_square_m = 2 ** (int(math.log2(config.num_warps)) // 2)
        layout = (near_square_m, config.num_warps // near_square_m)
    warps_m, warps_n = layout
    k_steps = k_padded // bk
    step_smem = (warps_n * bm + warps_m * bn + bm + bn) * bk * DTYPE_BYTES
    return _Work(
        blocks=m_tiles * n_tiles,
        executed_flops=m_tiles * n_tiles * block_flops,
        max_block_flops=block_flops,
        dram_bytes=float(problem.io_bytes()),
        l2_bytes=float(a_reads + b_reads - unique),
        scores=0.0,
        smem_bytes=float(m_tiles * n_tiles * k_steps * step_smem),
        iterations=float(m_tiles * n_tiles * k_steps),
        iteration_fp32_ops=0.0,
    )


def latency_hiding(resident_warps: int, num_stages: int) -> float:
    """Fraction of the MMA issue rate kept busy: grows with warps and stages, saturates at 1."""
    stage_factor = min(MAX_STAGE_FACTOR, 1.0 + STAGE_GAIN * (num_stages - 1))
    parallelism = resident_warps * stage_factor
    return parallelism / (parallelism + LATENCY_HALF_WARPS)


def estimate(
    problem: Problem,
    config: TileConfig,
    resources: ResourceUsage,
    *,
    dynamic_smem_bytes: int,
    arch: str,
) -> CostEstimate:
    """Model the kernel time of `config` for `problem` on `arch` from its ptxas resources.

    Raises:
        OutOfResourcesError: the block does not fit on an SM of `arch` at all.
    """
    spec = arch_spec(arch)
    occ: Occupancy = occupancy(
        spec,
        registers_per_thread=resources.registers,
        threads_per_block=config.num_threads,
        static_smem_bytes=resources.static_smem_bytes,
        dynamic_smem_bytes=dynamic_smem_bytes,
    )
    work = (
        _attention_work(problem, config)
        if isinstance(problem, AttentionProblem)
        else _gemm_work(problem, config)
    )

    # The busiest SM runs ceil(blocks / SMs) blocks, `active` at a time sharing its MMA units.
    blocks_per_sm = ceil_div(work.blocks, spec.sm_count)
    waves = ceil_div(work.blocks, spec.sm_count * occ.active_blocks)
    mean_block_flops = work.executed_flops / work.blocks
    # Causal grids mix light and heavy blocks; the scheduler balances all but the heaviest one.
    block_flops = max(mean_block_flops, work.max_block_flops / max(1, blocks_per_sm))

    # One block's time with the SM to itself: tensor issue or shared-memory reads, whichever
    # binds (they overlap across warps), at the mma.sync ceiling.
    clock_hz = BOOST_CLOCK_GHZ.get(arch, 1.5) * 1e9
    peak_flops_per_sm = spec.tensor_tflops * 1e12 / spec.sm_count
    mma_fraction = MMA_SYNC_PEAK_FRACTION.get(arch, 2.0 / 3.0)
    tensor_s = block_flops / (peak_flops_per_sm * mma_fraction)
    smem_s = (
        block_flops
        * (work.smem_bytes / work.executed_flops)
        / (SMEM_BYTES_PER_CLOCK_PER_SM * clock_hz)
    )
    iterations = work.iterations / work.blocks * (block_flops / mean_block_flops)
    iteration_clocks = (
        BARRIERS_PER_ITERATION * BARRIER_CLOCKS
        + work.iteration_fp32_ops / FP32_OPS_PER_CLOCK_PER_SM
    )
    loop_overhead_s = iterations * iteration_clocks / clock_hz
    spill_bytes = resources.spill_store_bytes + resources.spill_load_bytes
    block_s = (max(tensor_s, smem_s) + loop_overhead_s) * (
        1.0 + SPILL_SLOWDOWN_PER_BYTE * spill_bytes
    )

    def round_s(resident_blocks: int) -> float:
        """`resident_blocks` blocks sharing the SM, with the latency they leave unhidden."""
        hide = latency_hiding(resident_blocks * occ.warps_per_block, config.num_stages)
        return resident_blocks * block_s / hide

    full_rounds, remainder = divmod(blocks_per_sm, occ.active_blocks)
    compute_s = full_rounds * round_s(occ.active_blocks)
    if remainder:
        compute_s += round_s(remainder)
    if work.scores:
        exp_rate = EXP_PER_CLOCK_PER_SM * clock_hz
        compute_s += blocks_per_sm * (work.scores / work.blocks) * SOFTMAX_EXPS_PER_SCORE / exp_rate

    memory_s = work.dram_bytes / (spec.mem_gbps * 1e9) + work.l2_bytes / (
        spec.mem_gbps * 1e9 * L2_BANDWIDTH_MULTIPLE
    )
    overhead_s = (
        LAUNCH_OVERHEAD_US + BLOCK_OVERHEAD_US * ceil_div(blocks_per_sm, occ.active_blocks)
    ) * 1e-6
    time_s = max(compute_s, memory_s) + overhead_s
    useful = problem.flops()
    return CostEstimate(
        time_ms=time_s * 1e3,
        compute_ms=compute_s * 1e3,
        memory_ms=memory_s * 1e3,
        overhead_ms=overhead_s * 1e3,
        waves=waves,
        blocks=work.blocks,
        occupancy=occ.occupancy,
        active_blocks_per_sm=occ.active_blocks,
        efficiency=useful / time_s / (spec.tensor_tflops * 1e12),
        wasted_fraction=1.0 - useful / work.executed_flops,
        limiter=occ.limiter,
        bound="compute" if compute_s >= memory_s else "memory",
    )
