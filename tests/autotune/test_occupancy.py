"""Occupancy rules of shared/reference/hardware.md, checked against hand-computed cases."""

from __future__ import annotations

import pytest

from autotune.occupancy import occupancy
from tessera_core.errors import OutOfResourcesError
from tessera_core.hardware import KIB, arch_spec

H100 = arch_spec("sm_90")


def test_register_limited_block():
    # 128 regs: 4096 a warp; (65536/4/4096)*4 = 16 warps -> 4 blocks of 4 warps.
    # smem 1024 a block (reserved only): 4 blocks need 4 KiB -> 8 KiB carve-out -> 8 blocks.
    occ = occupancy(
        H100,
        registers_per_thread=128,
        threads_per_block=128,
        static_smem_bytes=0,
        dynamic_smem_bytes=0,
    )
    assert (occ.blocks_by_registers, occ.blocks_by_warps, occ.blocks_by_smem) == (4, 16, 8)
    assert occ.carveout_bytes == 8 * KIB
    assert occ.active_blocks == 4 and occ.limiter == "registers"
    assert occ.occupancy == pytest.approx(16 / 64)


def test_smem_limited_block_takes_the_largest_carveout():
    # 32 regs: 1024 a warp -> 64 warps -> 8 blocks of 8 warps; 64/8 = 8 by warps.
    # smem round_up(49152 + 1024, 128) = 50176; 8 blocks need 401408 > 228 KiB, so the
    # carve-out is 228 KiB = 233472 -> floor(233472 / 50176) = 4 blocks.
    occ = occupancy(
        H100,
        registers_per_thread=32,
        threads_per_block=256,
        static_smem_bytes=0,
        dynamic_smem_bytes=48 * KIB,
    )
    assert occ.smem_per_block_bytes == 50176
    assert occ.carveout_bytes == 228 * KIB
    assert (occ.blocks_by_registers, occ.blocks_by_warps, occ.blocks_by_smem) == (8, 8, 4)
    assert occ.active_blocks == 4 and occ.limiter == "smem"
    assert occ.occupancy == pytest.approx(0.5)


def test_register_allocation_rounds_to_256_a_warp():
    # 33 regs * 32 = 1056 -> 1280 a warp; floor(16384 / 1280) = 12 -> 48 warps -> 12 blocks.
    # Static smem 100 B: round_up(100 + 1024, 128) = 1152; 12 blocks need 13824 -> 16 KiB.
    occ = occupancy(
        H100,
        registers_per_thread=33,
        threads_per_block=128,
        static_smem_bytes=100,
        dynamic_smem_bytes=0,
    )
    assert occ.blocks_by_registers == 12
    assert occ.smem_per_block_bytes == 1152
    assert occ.carveout_bytes == 16 * KIB
    assert occ.blocks_by_smem == 16 * KIB // 1152
    assert occ.active_blocks == 12


def test_max_blocks_per_sm_on_sm86():
    # A40: 48 warps, 16 blocks an SM. 16 regs, 2 warps: registers allow 64 blocks, warps 24,
    # the 16-block cap binds; 16 blocks of 1024 bytes fit the 16 KiB carve-out exactly.
    occ = occupancy(
        arch_spec("sm_86"),
        registers_per_thread=16,
        threads_per_block=64,
        static_smem_bytes=0,
        dynamic_smem_bytes=0,
    )
    assert (occ.blocks_by_registers, occ.blocks_by_warps) == (64, 24)
    assert occ.carveout_bytes == 16 * KIB and occ.blocks_by_smem == 16
    assert occ.active_blocks == 16 and occ.limiter == "blocks"
    assert occ.occupancy == pytest.approx(32 / 48)


def test_warp_limited_block():
    # 1024 threads at 32 regs: registers allow 64 warps = 2 blocks, warps allow 64/32 = 2.
    occ = occupancy(
        H100,
        registers_per_thread=32,
        threads_per_block=1024,
        static_smem_bytes=0,
        dynamic_smem_bytes=0,
    )
    assert occ.active_blocks == 2 and occ.limiter == "warps"
    assert occ.occupancy == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "resource"),
    [
        (dict(registers_per_thread=255, threads_per_block=1024), "registers for one block"),
        (dict(registers_per_thread=256, threads_per_block=32), "registers per thread"),
        (dict(registers_per_thread=32, threads_per_block=2048), "threads per block"),
        (
            dict(registers_per_thread=32, threads_per_block=128, static_smem_bytes=49 * KIB),
            "static shared memory",
        ),
        (
            dict(registers_per_thread=32, threads_per_block=128, dynamic_smem_bytes=228 * KIB),
            "shared memory bytes per block",
        ),
    ],
)
def test_blocks_that_cannot_run_raise_naming_the_resource(kwargs, resource):
    args = {"static_smem_bytes": 0, "dynamic_smem_bytes": 0, **kwargs}
    with pytest.raises(OutOfResourcesError) as info:
        occupancy(H100, **args)
    assert resource in info.value.resource
    assert info.value.arch == "sm_90"
