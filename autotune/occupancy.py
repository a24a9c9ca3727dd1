"""Active blocks per SM from a kernel's real resource usage, by the CUDA occupancy calculator."""

from __future__ import annotations

from dataclasses import dataclass

from tessera_core.errors import OutOfResourcesError
from tessera_core.hardware import KIB, REG_ALLOC_UNIT, WARP_SIZE, ArchSpec, ceil_div

REG_SUBPARTITIONS = 4  # the register file is split over the SM's four schedulers
SMEM_ALLOC_UNIT_BYTES = 128


def _round_up(value: int, unit: int) -> int:
    return ceil_div(value, unit) * unit


@dataclass(frozen=True)
class Occupancy:
    """How many blocks of one kernel fit on an SM at once, and what limits them."""

    active_blocks: int
    warps_per_block: int
    occupancy: float  # resident warps / max warps per SM
    blocks_by_registers: int
    blocks_by_smem: int
    blocks_by_warps: int
    smem_per_block_bytes: int  # rounded, reserved bytes included
    carveout_bytes: int
    limiter: str  # "registers" | "smem" | "warps" | "blocks"

    @property
    def resident_warps(self) -> int:
        return self.active_blocks * self.warps_per_block


def occupancy(
    spec: ArchSpec,
    *,
    registers_per_thread: int,
    threads_per_block: int,
    static_smem_bytes: int,
    dynamic_smem_bytes: int,
) -> Occupancy:
    """Blocks per SM as in shared/reference/hardware.md ("Occupancy rules").

    The carve-out is the smallest supported size holding every block the other limits allow
    (the driver's default choice, which leaves the rest to L1); when none holds them all,
    the largest carve-out.

    Raises:
        OutOfResourcesError: the block cannot run at all on `spec` (too many threads or
            registers a thread, more static or total shared memory than a block may have).
    """
    block_smem_bytes = static_smem_bytes + dynamic_smem_bytes
    for resource, need, limit in (
        ("threads per block", threads_per_block, spec.max_threads_per_block),
        ("registers per thread", registers_per_thread, spec.max_regs_per_thread),
        ("static shared memory bytes", static_smem_bytes, spec.max_static_smem_bytes),
        ("shared memory bytes per block", block_smem_bytes, spec.max_smem_per_block_bytes),
    ):
        if need > limit:
            raise OutOfResourcesError(resource=resource, need=need, limit=limit, arch=spec.arch)

    warps_per_block = ceil_div(threads_per_block, WARP_SIZE)
    blocks_by_warps = spec.max_warps_per_sm // warps_per_block

    if registers_per_thread <= 0:  # ptxas may report 0 for a trivial kernel: no register limit
        blocks_by_registers = spec.max_blocks_per_sm
    else:
        regs_per_warp = _round_up(registers_per_thread * WARP_SIZE, REG_ALLOC_UNIT)
        warps_by_registers = (
            spec.regs_per_sm // REG_SUBPARTITIONS // regs_per_warp
        ) * REG_SUBPARTITIONS
        blocks_by_registers = warps_by_registers // warps_per_block

    smem_per_block = _round_up(
        block_smem_bytes + spec.reserved_smem_per_block_bytes, SMEM_ALLOC_UNIT_BYTES
    )
    others = min(blocks_by_warps, blocks_by_registers, spec.max_blocks_per_sm)
    carveouts = [kib * KIB for kib in spec.smem_carveouts_kib]
    fitting = [c for c in carveouts if c >= others * smem_per_block]
    carveout = min(fitting) if fitting else max(carveouts)
    blocks_by_smem = carveout // smem_per_block

    # On a tie the hard per-SM limits are named first: the carve-out adapts, they do not.
    limits = {
        "blocks": spec.max_blocks_per_sm,
        "warps": blocks_by_warps,
        "registers": blocks_by_registers,
        "smem": blocks_by_smem,
    }
    limiter = min(limits, key=lambda name: limits[name])
    active = limits[limiter]
    if active == 0:  # e.g. 1024 threads at 255 registers: the block never fits
        raise OutOfResourcesError(
            resource=f"{limiter} for one block of {threads_per_block} threads",
            need=1,
            limit=0,
            arch=spec.arch,
        )
    return Occupancy(
        active_blocks=active,
        warps_per_block=warps_per_block,
        occupancy=active * warps_per_block / spec.max_warps_per_sm,
        blocks_by_registers=blocks_by_registers,
        blocks_by_smem=blocks_by_smem,
        blocks_by_warps=blocks_by_warps,
        smem_per_block_bytes=smem_per_block,
        carveout_bytes=carveout,
        limiter=limiter,
    )
