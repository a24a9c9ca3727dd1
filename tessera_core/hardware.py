"""Per-arch hardware figures (shared/reference/hardware.md) for constraints and the cost model.

Every figure names its source. Vendor sources: the NVIDIA A100 Tensor Core GPU Architecture
whitepaper (2020), the NVIDIA Ampere GA102 GPU Architecture whitepaper (A40), the NVIDIA
L40S datasheet (2023), the NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022), and the
CUDA C++ Programming Guide's "Arithmetic Instructions" throughput table (results per clock
per SM, by compute capability) and "Shared Memory" section (cc 5.x and later: 32 banks, each
32 bits wide, each delivering 32 bits a clock). tests/tessera_core/test_hardware.py checks
each figure against the published number it restates.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KIB = 1024
WARP_SIZE = 32
# Registers are allocated to a warp in chunks of 256 (CUDA occupancy calculator).
REG_ALLOC_UNIT = 256
# Rates every supported arch (sm_80..sm_90) shares, per SM per clock:
SCHEDULERS_PER_SM = 4  # four partitions, one warp scheduler each, one warp-instruction a clock
MUFU_LANES_PER_SM = 16  # exp2/log2/rcp/rsqrt/sin/cos results (CUDA guide table: 16 for 8.x, 9.0)
SMEM_BYTES_PER_CLOCK_PER_SM = 128  # 32 banks x 4 bytes (CUDA guide, shared memory)


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
    # Dense fp16 tensor FLOP per clock per SM: 2 x the FMAs of the SM's tensor cores.
    tensor_flops_per_clock_per_sm: int = 2048
    fp32_lanes_per_sm: int = 128  # FP32 add/mul/FMA results a clock (CUDA guide table)
    clock_ghz: float = 1.41  # the boost clock the tensor peak is quoted at
    # Best fraction of the tensor peak `mma.sync` can reach: all of it where mma.sync is the
    # arch's tensor instruction; about two thirds on sm_90, whose peak needs wgmma
    # (hardware.md: "mma.sync alone reaches roughly two thirds of the H100 peak at best").
    mma_sync_peak_fraction: float = 1.0
    reserved_smem_per_block_bytes: int = 1 * KIB
    max_static_smem_bytes: int = 48 * KIB
    max_threads_per_block: int = 1024

    @property
    def fp32_tflops(self) -> float:
        """FP32 FMA peak (2 FLOP per lane per clock) at `clock_ghz`."""
        return 2 * self.fp32_lanes_per_sm * self.sm_count * self.clock_ghz / 1e3

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
            # A100 whitepaper: 4 third-generation tensor cores x 256 dense fp16 FMA a clock;
            # 64 FP32 cores per SM (19.5 TFLOP/s FP32); boost clock 1410 MHz.
            tensor_flops_per_clock_per_sm=2048,
            fp32_lanes_per_sm=64,
            clock_ghz=1.41,
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
            # GA102 whitepaper: 4 tensor cores x 128 dense fp16 FMA a clock (fp32 accumulate
            # at full rate on A40: 149.7 TFLOP/s); 128 FP32 lanes per SM; boost 1740 MHz.
            tensor_flops_per_clock_per_sm=1024,
            fp32_lanes_per_sm=128,
            clock_ghz=1.74,
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
            # L40S datasheet: 362.05 dense fp16 TFLOP/s with fp32 accumulate, 91.6 TFLOP/s
            # FP32 (128 lanes per SM), boost clock 2520 MHz; 1024 tensor FLOP a clock per SM.
            tensor_flops_per_clock_per_sm=1024,
            fp32_lanes_per_sm=128,
            clock_ghz=2.52,
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
            # H100 whitepaper: 4 fourth-generation tensor cores x 512 dense fp16 FMA a clock;
            # 989.4 TFLOP/s / (132 SMs x 4096 FLOP) is the 1830 MHz the tensor peak is quoted
            # at (its 66.9 TFLOP/s FP32 figure uses the 1980 MHz boost clock); 128 FP32 lanes.
            tensor_flops_per_clock_per_sm=4096,
            fp32_lanes_per_sm=128,
            clock_ghz=1.83,
            mma_sync_peak_fraction=2.0 / 3.0,
        ),
    )
}

# sm_90a: the same H100 with its arch-specific instructions (wgmma, setmaxnreg) enabled; the
# Hopper families (templates/gemm_sm90) are compiled for it. Same figures as sm_90.
ARCHS["sm_90a"] = dataclasses.replace(ARCHS["sm_90"], arch="sm_90a")

DEFAULT_ARCH = "sm_90"

# wgmma (sm_90a) issues at the tensor cores' full dense rate, which mma.sync cannot reach on
# sm_90 (mma_sync_peak_fraction): hardware.md's 989.4 TFLOP/s fp16/bf16 on H100 SXM is
# tensor_flops_per_clock_per_sm x 132 SMs x 1.83 GHz. FP8 (e4m3/e5m2, wgmma k32) doubles it:
# the NVIDIA H100 datasheet quotes 3958 TFLOP/s FP8 with 2:4 sparsity, 1979 dense, twice the
# 989.4 (as issue 10 restates: "989 dense fp16, 1979 fp8").
WGMMA_PEAK_FRACTION = 1.0
TENSOR_RATE_MULTIPLE_BY_DTYPE = {"fp16": 1, "bf16": 1, "e4m3": 2}


def tensor_tflops(arch: str, dtype: str = "fp16", *, wgmma: bool = False) -> float:
    """The dense tensor peak of `arch` for `dtype` inputs (fp32 accumulate), in TFLOP/s, for
    wgmma (the full rate; sm_90a) or mma.sync (the arch's mma.sync ceiling)."""
    spec = arch_spec(arch)
    fraction = WGMMA_PEAK_FRACTION if wgmma else spec.mma_sync_peak_fraction
    multiple = TENSOR_RATE_MULTIPLE_BY_DTYPE.get(dtype, 1)
    return spec.tensor_tflops * fraction * multiple


# The arch-specific feature set a device of that compute capability runs natively: an sm_90
# device (H100, H200) runs sm_90a cubins, so its kernels are built for sm_90a and the Hopper
# families (wgmma, TMA) serve it. An explicit "sm_90" target keeps the mma.sync families.
NATIVE_ARCH_SPECIFIC = {"sm_90": "sm_90a"}


def native_arch(device_arch: str) -> str:
    """The target a device of `device_arch` ("sm_90") runs best: its arch-specific feature
    set when there is one ("sm_90a"), else `device_arch` itself."""
    return NATIVE_ARCH_SPECIFIC.get(device_arch, device_arch)


def arch_spec(arch: str) -> ArchSpec:
    """The figures of `arch`; raises ValueError naming the supported archs."""
    try:
        return ARCHS[arch]
    except KeyError:
        raise ValueError(
            f"arch={arch!r} is not supported; expected one of {', '.join(sorted(ARCHS))}"
        ) from None


# The cost model's efficiency factors fitted to measured records (`python -m autotune.calibrate`),
# one object per arch; absent or without the arch, the model's uncalibrated defaults apply.
CALIBRATION_PATH = Path(__file__).with_name("calibration.json")


def calibration(arch: str, path: Path | None = None) -> dict[str, Any]:
    """The stored calibration of `arch` ({"factors": {...}, ...}), or {} when there is none.

    Raises ValueError naming the file when it exists but is not a JSON object of objects.
    """
    path = path or CALIBRATION_PATH
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"calibration file {path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"calibration file {path}: expected {{arch: {{factors: ...}}}}")
    entry: dict[str, Any] = data.get(arch, {})
    return entry
