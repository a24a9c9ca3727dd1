"""An analytical kernel time estimate (the `model` objective) from problem, tiles, resources, arch.

The busiest SM's time, from what one block does per main-loop iteration (autotune.tile_work):

- pipes, in clocks of the whole SM per block-iteration: tensor (FLOPs at the arch's dense
  tensor rate times its mma.sync ceiling), shared memory (every warp's ldmatrix reads plus the
  cp.async fill at 128 B/clk), MUFU (exponentials at 16/clk), FP32 (softmax lane-ops at the
  arch's FP32 lanes) and issue slots (every warp's instructions, from the compiled kernel's
  SASS main loop when given, at 4 warp-instructions a clock). They overlap across warps, so
  an iteration costs the bottleneck (max), plus the share of the other pipes' dependent work
  (S before softmax before P.V) that too few warps per scheduler cannot hide;
- exposed latency: a KV/k tile's global loads are issued (num_stages - 1) iterations ahead;
  what those iterations, and the other resident blocks, do not cover waits, as does each
  barrier;
- occupancy from the real ptxas registers and shared memory; rounds of resident blocks on
  the busiest SM (so a grid that leaves SMs idle, or a last partial wave, is slow);
- memory: DRAM bytes at peak bandwidth plus L2 re-reads, overlapped with compute (max);
- fixed costs per block (pipeline fill, epilogue) and per launch; spills slow the loop.

Rates are ArchSpec's cited figures (tessera_core/hardware.py). What no vendor publishes (the
latency, the exposed share, the overheads) are assumptions named below; seven efficiency
factors, 1.0 by default, scale the terms and are fitted per arch to measured records by
`python -m autotune.calibrate` (stored in tessera_core/calibration.json, read here).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from autotune.loop_structure import MMA_SYNC, LoopStructure, structure_of
from autotune.occupancy import occupancy
from autotune.tile_work import TileWork, tile_work, with_sass
from tessera_core.hardware import (
    MUFU_LANES_PER_SM,
    SCHEDULERS_PER_SM,
    SMEM_BYTES_PER_CLOCK_PER_SM,
    TENSOR_RATE_MULTIPLE_BY_DTYPE,
    WGMMA_PEAK_FRACTION,
    arch_spec,
    calibration,
    ceil_div,
    tensor_tflops,
)
from tessera_core.types import Problem, TileConfig

# The efficiency factors calibration fits: each multiplies the time of one term.
FACTOR_NAMES = ("tensor", "smem", "issue", "overlap", "latency", "memory", "overhead")
# Share of the non-bottleneck pipes' work left exposed with one warp per scheduler (divided
# by the warps each scheduler holds). Not a vendor figure: anchored on FlashAttention-2's
# published forward throughput at its own tiles (128x128, 4 warps, d64, seq 2k; hardware.md):
# ~190 TFLOP/s (61% of peak) on A100, 318 on H100 (H100's tensor rate doubled, its MUFU and
# FP32 rates per SM did not, so more of the softmax shows). sm_86/sm_89 take A100's (same mma.sync
# generation). Calibration corrects it per arch through the `overlap` factor.
# sm_90a is the same H100 (its mma.sync families behave as on sm_90).
EXPOSED_SHARE = {"sm_80": 0.33, "sm_86": 0.33, "sm_89": 0.33, "sm_90": 0.9, "sm_90a": 0.9}
# Global-memory latency of a cp.async tile load, in clocks: an assumption (microbenchmarks of
# A100/H100 put DRAM latency at several hundred clocks); fitted via `latency`.
GLOBAL_LATENCY_CLOCKS = 600
BARRIER_CLOCKS = 40  # bar.sync with warps arriving together; an assumption, fitted via `latency`
L2_BANDWIDTH_MULTIPLE = 3.0  # L2 re-read bandwidth / DRAM bandwidth: an assumption (`memory`)
BLOCK_OVERHEAD_US = 1.5  # prologue loads + pipeline fill + epilogue of one block (`overhead`)
LAUNCH_OVERHEAD_US = 3.0  # driver launch latency (`overhead`)
SPILL_SLOWDOWN_PER_BYTE = 0.01  # +1% loop time per spilled byte a thread stores or loads


class ResourceUsage(Protocol):
    """What ptxas reports for one compiled kernel (generator.resources.Resources)."""

    @property
    def registers(self) -> int: ...
    @property
    def static_smem_bytes(self) -> int: ...
    @property
    def spill_store_bytes(self) -> int: ...
    @property
    def spill_load_bytes(self) -> int: ...


@dataclass(frozen=True)
class Factors:
    """Multipliers on the model's terms (1.0 = uncalibrated); see FACTOR_NAMES."""

    tensor: float = 1.0
    smem: float = 1.0
    issue: float = 1.0
    overlap: float = 1.0
    latency: float = 1.0
    memory: float = 1.0
    overhead: float = 1.0

    def __post_init__(self) -> None:
        for name in FACTOR_NAMES:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"Factors.{name}={value!r}: must be a positive number")

    def to_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in FACTOR_NAMES}

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> Factors:
        unknown = sorted(set(data) - set(FACTOR_NAMES))
        if unknown:
            raise ValueError(f"factors {unknown}: unknown; expected some of {FACTOR_NAMES}")
        return cls(**{k: float(v) for k, v in data.items()})


@functools.cache
def calibrated_factors(arch: str) -> Factors:
    """The factors stored for `arch` by `python -m autotune.calibrate`, else all 1.0."""
    return Factors.from_dict(calibration(arch).get("factors", {}))


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
    bound: str  # the bottleneck: tensor | smem | mufu | fp32 | issue | latency | memory
    iteration_clocks: float  # one block-iteration's SM time at full occupancy
    pipe_clocks: Mapping[str, float]  # per block-iteration: tensor, smem, mufu, fp32, issue
    instruction_source: str  # "sass" | "analytic"

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "pipe_clocks": dict(self.pipe_clocks)}


def tensor_flops_per_clock(arch: str, structure: LoopStructure, dtype: str) -> float:
    """Dense tensor FLOP a clock per SM: wgmma's full rate or the arch's mma.sync ceiling,
    doubled for e4m3 inputs (tessera_core.hardware.tensor_tflops, cited there)."""
    spec = arch_spec(arch)
    fraction = WGMMA_PEAK_FRACTION if structure.wgmma else spec.mma_sync_peak_fraction
    return spec.tensor_flops_per_clock_per_sm * fraction * TENSOR_RATE_MULTIPLE_BY_DTYPE[dtype]


def pipe_clocks(
    work: TileWork,
    arch: str,
    factors: Factors,
    *,
    structure: LoopStructure = MMA_SYNC,
    dtype: str = "fp16",
) -> dict[str, float]:
    """SM clocks each pipe needs for one iteration of one block."""
    spec = arch_spec(arch)
    tensor_rate = tensor_flops_per_clock(arch, structure, dtype)
    return {
        "tensor": work.iteration_flops / tensor_rate * factors.tensor,
        "smem": work.iteration_smem_bytes / SMEM_BYTES_PER_CLOCK_PER_SM * factors.smem,
        "mufu": work.iteration_exps / MUFU_LANES_PER_SM,
        "fp32": work.iteration_fp32_ops / spec.fp32_lanes_per_sm,
        "issue": work.iteration_warp_instructions / SCHEDULERS_PER_SM * factors.issue,
    }


def _busy_clocks(
    pipes: Mapping[str, float],
    resident_warps: int,
    arch: str,
    factors: Factors,
    structure: LoopStructure = MMA_SYNC,
) -> tuple[float, str]:
    """(SM clocks of one block-iteration, bottleneck pipe) with `resident_warps` on the SM."""
    bound = max(pipes, key=lambda name: pipes[name])
    execution = [pipes[name] for name in ("tensor", "smem", "mufu", "fp32")]
    warps_per_scheduler = max(1.0, resident_warps / SCHEDULERS_PER_SM)
    share = structure.exposed_share
    exposed = (
        (sum(execution) - max(execution))
        * (EXPOSED_SHARE.get(arch, 0.4) if share is None else share)
        * factors.overlap
        / warps_per_scheduler
    )
    return pipes[bound] + exposed, bound


def _own_iteration_clocks(
    busy: float, resident: int, num_stages: int, barriers: float, factors: Factors
) -> tuple[float, bool]:
    """Wall clocks between one block's iterations with `resident` blocks sharing the SM.

    A tile's load is issued num_stages - 1 of the block's own iterations ahead; each of
    those takes `resident * busy` clocks of SM time. The wait that leaves uncovered, and the
    barriers, are exposed unless the other resident blocks fill them: wall per own iteration
    = max(resident * busy, busy + uncovered latency + barriers). Also returns whether the
    uncovered load latency is what sets it.
    """
    latency = GLOBAL_LATENCY_CLOCKS * factors.latency
    uncovered = max(0.0, latency - (num_stages - 1) * resident * busy)
    stall = barriers * BARRIER_CLOCKS * factors.latency
    exposed = busy + uncovered + stall
    return max(resident * busy, exposed), uncovered > 0 and exposed > resident * busy


def estimate(
    problem: Problem,
    config: TileConfig,
    resources: ResourceUsage,
    *,
    dynamic_smem_bytes: int,
    arch: str,
    loop_counts: Mapping[str, int] | None = None,
    factors: Factors | None = None,
    family: str | None = None,
    input_dtype: str | None = None,
) -> CostEstimate:
    """Model the kernel time of `config` for `problem` on `arch` from its ptxas resources.

    Args:
        loop_counts: the compiled kernel's SASS main-loop histogram
            (generator.sass.kernel_and_loop_counts); None falls back to the analytical
            instruction mix of autotune.tile_work (stated there).
        factors: efficiency factors; default the arch's stored calibration, else all 1.0.
        family: the family the config belongs to (default: the op's own); its loop structure
            (autotune.loop_structure: mma.sync, or wgmma fed by a TMA producer) sets the
            tensor rate, the barriers and the overlap.
        input_dtype: the tensor inputs' dtype when it is not `problem.dtype` (e4m3 doubles
            the tensor rate).

    Raises:
        OutOfResourcesError: the block does not fit on an SM of `arch` at all.
    """
    spec = arch_spec(arch)
    factors = factors if factors is not None else calibrated_factors(arch)
    occ = occupancy(
        spec,
        registers_per_thread=resources.registers,
        threads_per_block=config.num_threads,
        static_smem_bytes=resources.static_smem_bytes,
        dynamic_smem_bytes=dynamic_smem_bytes,
    )
    structure = structure_of(family).for_config(config)
    dtype = input_dtype or problem.dtype
    work = tile_work(problem, config, family=family, dtype=dtype)
    if loop_counts:
        work = with_sass(work, config, loop_counts)
    if structure.barriers_per_iteration is not None:
        work = replace(work, iteration_barriers=structure.barriers_per_iteration)
    spill_bytes = resources.spill_store_bytes + resources.spill_load_bytes
    spill = 1.0 + SPILL_SLOWDOWN_PER_BYTE * spill_bytes
    pipes = pipe_clocks(work, arch, factors, structure=structure, dtype=dtype)
    # Only consumer warps hide each other's dependent work; a producer warpgroup only loads.
    math_warps = structure.consumer_warps(occ.warps_per_block)

    # The busiest SM runs ceil(blocks / SMs) blocks, `active` at a time; causal grids mix
    # light and heavy blocks, and the scheduler balances all but the heaviest one.
    blocks_per_sm = ceil_div(work.blocks, spec.sm_count)
    mean_iterations = work.iterations / work.blocks
    block_iterations = max(mean_iterations, work.max_block_iterations / max(1, blocks_per_sm))

    def round_clocks(resident: int) -> tuple[float, str]:
        busy, bound = _busy_clocks(pipes, resident * math_warps, arch, factors, structure)
        busy *= spill
        own, latency_bound = _own_iteration_clocks(
            busy, resident, config.num_stages, work.iteration_barriers, factors
        )
        if latency_bound:
            bound = "latency"
        return block_iterations * own, bound

    full_rounds, remainder = divmod(blocks_per_sm, occ.active_blocks)
    full_clocks, bound = round_clocks(occ.active_blocks)
    clocks = full_rounds * full_clocks
    if remainder:
        clocks += round_clocks(remainder)[0]
    clock_hz = spec.clock_ghz * 1e9
    compute_s = clocks / clock_hz
    memory_s = (
        work.dram_bytes / (spec.mem_gbps * 1e9)
        + work.l2_bytes / (spec.mem_gbps * 1e9 * L2_BANDWIDTH_MULTIPLE)
    ) * factors.memory
    rounds = ceil_div(blocks_per_sm, occ.active_blocks)
    overhead_s = (LAUNCH_OVERHEAD_US + BLOCK_OVERHEAD_US * rounds) * 1e-6 * factors.overhead
    time_s = max(compute_s, memory_s) + overhead_s
    useful = problem.flops()
    resident_math_warps = occ.active_blocks * math_warps
    busy_full = _busy_clocks(pipes, resident_math_warps, arch, factors, structure)[0] * spill
    return CostEstimate(
        time_ms=time_s * 1e3,
        compute_ms=compute_s * 1e3,
        memory_ms=memory_s * 1e3,
        overhead_ms=overhead_s * 1e3,
        waves=ceil_div(work.blocks, spec.sm_count * occ.active_blocks),
        blocks=work.blocks,
        occupancy=occ.occupancy,
        active_blocks_per_sm=occ.active_blocks,
        efficiency=useful / time_s / (tensor_tflops(arch, dtype, wgmma=True) * 1e12),
        wasted_fraction=1.0 - useful / work.executed_flops,
        limiter=occ.limiter,
        bound=bound if compute_s >= memory_s else "memory",
        iteration_clocks=busy_full,
        pipe_clocks=pipes,
        instruction_source=work.instruction_source,
    )
