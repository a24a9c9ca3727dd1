"""Per-arch hardware figures (shared/reference/hardware.md) for constraints and the cost model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

KIB = 1024
WARP_SIZE = 32
# Registers are allocated to a warp in chunks of 256 (CUDA occupancy calculator).
REG_ALLOC_UNIT = 256


def ceil_div(numerator: int, denominator: int) -> int:
    """Whole units (tiles, blocks, allocation chunks) needed to cover `numerator`."""
    return -(-numerator // denominator)


@dataclass(frozen=True)
class ArchSpec:
    """Limits and peak rates of one compute capability, with the reference GPU they come from."""

    arch: str
    gpu: str
    sm_count: int
    tensor_tflops: float  # dense fp16/bf16 with fp32 accumulate
    mem_gbps: float
    max_warps_per_sm: int
    max_blocks_per_sm: int
    regs_per_sm: int
    max_regs_per_thread: int
    max_smem_per_sm_bytes: int
    max_smem_per_block_bytes: int  # opt-in limit, dynamic shared memory
    smem_carveouts_kib: tuple[int, ...]
    reserved_smem_per_block_bytes: int = 1 * KIB
    max_static_smem_bytes: int = 48 * KIB
    max_threads_per_block: int = 1024

    @property
    def compute_capability(self) -> tuple[int, int]:
        digits = self.arch.removeprefix("sm_").rstrip("af")
        return int(digits[:-1]), int(digits[-1])

    @property
    def arch_specific(self) -> bool:
        """An arch-specific feature set ("sm_90a": wgmma, setmaxnreg), not forward compatible."""
        return self.arch.endswith("a")


ARCHS: dict[str, ArchSpec] = {
    spec.arch: spec
    for spec in (
        ArchSpec(
            "sm_80",
            "A100 SXM 80GB",
            108,
            312.0,
            2039.0,
            64,
            32,
            65536,
            255,
            164 * KIB,
            163 * KIB,
            (0, 8, 16, 32, 64, 100, 132, 164),
        ),
        ArchSpec(
            "sm_86",
            "A40",
            84,
            149.7,
            696.0,
            48,
            16,
            65536,
            255,
            100 * KIB,
            99 * KIB,
            (0, 8, 16, 32, 64, 100),
        ),
        ArchSpec(
            "sm_89",
            "L40S",
            142,
            362.0,
            864.0,
            48,
            24,
            65536,
            255,
            100 * KIB,
            99 * KIB,
            (0, 8, 16, 32, 64, 100),
        ),
        ArchSpec(
            "sm_90",
            "H100 SXM",
            132,
            989.4,
            3350.0,
            64,
            32,
            65536,
            255,
            228 * KIB,
            227 * KIB,
            (0, 8, 16, 32, 64, 100, 132, 164, 196, 228),
        ),
    )
}

# sm_90a: the same H100 with its arch-specific instructions (wgmma, setmaxnreg) enabled; the
# Hopper families (templates/gemm_sm90) are compiled for it. Same figures as sm_90.
ARCHS["sm_90a"] = dataclasses.replace(ARCHS["sm_90"], arch="sm_90a")

DEFAULT_ARCH = "sm_90"


def arch_spec(arch: str) -> ArchSpec:
    """The figures of `arch`; raises ValueError naming the supported archs."""
    try:
        return ARCHS[arch]
    except KeyError:
        raise ValueError(
            f"arch={arch!r} is not supported; expected one of {', '.join(sorted(ARCHS))}"
        ) from None
