from __future__ import annotations

import pytest

from tessera_core.hardware import ARCHS, arch_spec


def test_arch_table_matches_reference() -> None:
    assert arch_spec("sm_90").sm_count == 132
    assert arch_spec("sm_80").max_smem_per_block_bytes == 163 * 1024
    assert arch_spec("sm_86").max_warps_per_sm == 48
    assert arch_spec("sm_89").compute_capability == (8, 9)
    assert set(ARCHS) == {"sm_80", "sm_86", "sm_89", "sm_90", "sm_90a"}


def test_sm_90a_is_sm_90_with_its_arch_specific_features() -> None:
    plain, specific = arch_spec("sm_90"), arch_spec("sm_90a")
    assert specific.compute_capability == (9, 0)
    assert specific.arch_specific and not plain.arch_specific
    assert specific.sm_count == plain.sm_count
    assert specific.max_smem_per_block_bytes == plain.max_smem_per_block_bytes


def test_unknown_arch_names_choices() -> None:
    with pytest.raises(ValueError, match="sm_80, sm_86, sm_89, sm_90, sm_90a"):
        arch_spec("sm_70")


# Each per-arch rate the cost model uses, checked against the published figure it restates.
TFLOPS_TOLERANCE = 0.015  # vendor figures are rounded; L40S's is quoted at a ~1% lower clock


def _tensor_tflops(arch: str) -> float:
    spec = arch_spec(arch)
    return spec.tensor_flops_per_clock_per_sm * spec.sm_count * spec.clock_ghz / 1e3


def test_a100_tensor_rate_gives_its_published_peak() -> None:
    """A100 whitepaper: 312 dense fp16 TFLOP/s = 108 SMs x 1024 FMA/clk x 2 x 1410 MHz."""
    assert _tensor_tflops("sm_80") == pytest.approx(312.0, rel=TFLOPS_TOLERANCE)
    assert arch_spec("sm_80").tensor_tflops == 312.0


def test_a40_tensor_rate_gives_its_published_peak() -> None:
    """GA102 whitepaper / A40 datasheet: 149.7 dense fp16 TFLOP/s (fp32 accumulate), 84 SMs."""
    assert _tensor_tflops("sm_86") == pytest.approx(149.7, rel=TFLOPS_TOLERANCE)


def test_l40s_tensor_rate_gives_its_published_peak() -> None:
    """L40S datasheet: 362.05 dense fp16 TFLOP/s with fp32 accumulate, 142 SMs, 2520 MHz."""
    assert _tensor_tflops("sm_89") == pytest.approx(362.0, rel=TFLOPS_TOLERANCE)


def test_h100_tensor_rate_gives_its_published_peak() -> None:
    """H100 whitepaper: 989.4 dense fp16 TFLOP/s = 132 SMs x 2048 FMA/clk x 2 x 1830 MHz."""
    assert _tensor_tflops("sm_90") == pytest.approx(989.4, rel=0.002)


def test_mma_sync_reaches_two_thirds_of_the_h100_peak_and_all_of_the_others() -> None:
    """hardware.md: mma.sync alone reaches roughly two thirds of the H100 peak at best;
    on sm_80..sm_89 mma.sync is the tensor instruction the peak is quoted for."""
    assert arch_spec("sm_90").mma_sync_peak_fraction == pytest.approx(2 / 3)
    for arch in ("sm_80", "sm_86", "sm_89"):
        assert arch_spec(arch).mma_sync_peak_fraction == 1.0


def test_a100_fp32_is_64_lanes_a_clock() -> None:
    """A100 whitepaper: 19.5 TFLOP/s FP32, 64 FP32 cores per SM; CUDA guide table: 64 for 8.0."""
    spec = arch_spec("sm_80")
    assert spec.fp32_lanes_per_sm == 64
    assert spec.fp32_tflops == pytest.approx(19.5, rel=0.01)


def test_ga10x_and_ada_fp32_is_128_lanes_a_clock() -> None:
    """CUDA guide table: 128 FP32 results/clk/SM for 8.6 and 8.9; A40 37.4 TFLOP/s at
    1740 MHz, L40S 91.6 TFLOP/s at 2520 MHz (datasheets)."""
    assert arch_spec("sm_86").fp32_tflops == pytest.approx(37.4, rel=0.01)
    assert arch_spec("sm_89").fp32_tflops == pytest.approx(91.6, rel=0.01)


def test_h100_fp32_is_128_lanes_a_clock() -> None:
    """H100 whitepaper: 66.9 TFLOP/s FP32 = 132 SMs x 128 lanes x 2 x 1980 MHz (its boost
    clock; the model runs every pipe at the 1830 MHz the tensor peak implies)."""
    spec = arch_spec("sm_90")
    assert spec.fp32_lanes_per_sm == 128
    assert pytest.approx(66.9, rel=0.01) == 2 * 128 * 132 * 1.98 / 1e3


def test_shared_rates_of_every_arch() -> None:
    """CUDA guide: exp2/log2/rcp (MUFU) 16 results/clk/SM for 8.x and 9.0; shared memory 32
    banks x 32 bits a clock = 128 B/clk/SM; A100/H100 whitepapers: 4 warp schedulers per SM,
    one warp-instruction a clock each."""
    from tessera_core.hardware import (
        MUFU_LANES_PER_SM,
        SCHEDULERS_PER_SM,
        SMEM_BYTES_PER_CLOCK_PER_SM,
    )

    assert MUFU_LANES_PER_SM == 16
    assert SMEM_BYTES_PER_CLOCK_PER_SM == 32 * 4
    assert SCHEDULERS_PER_SM == 4


def test_memory_bandwidths_and_sm_counts_are_hardware_md_figures() -> None:
    """hardware.md peak table: A100 SXM 80GB 2039 GB/s 108 SMs; A40 696 GB/s 84 SMs;
    L40S 864 GB/s 142 SMs; H100 SXM 3350 GB/s 132 SMs."""
    want = {"sm_80": (2039, 108), "sm_86": (696, 84), "sm_89": (864, 142), "sm_90": (3350, 132)}
    for arch, (gbps, sms) in want.items():
        assert (arch_spec(arch).mem_gbps, arch_spec(arch).sm_count) == (gbps, sms)


def test_calibration_is_empty_without_a_file_and_read_per_arch(tmp_path) -> None:
    from tessera_core.hardware import calibration

    assert calibration("sm_90", tmp_path / "none.json") == {}
    path = tmp_path / "c.json"
    path.write_text('{"sm_90": {"factors": {"tensor": 1.1}}}')
    assert calibration("sm_90", path) == {"factors": {"tensor": 1.1}}
    assert calibration("sm_80", path) == {}
    path.write_text("[1]")
    with pytest.raises(ValueError, match=r"c\.json"):
        calibration("sm_90", path)


def test_wgmma_reaches_the_full_h100_peak_of_989_tflops_bf16() -> None:
    """hardware.md: 989.4 dense fp16/bf16 TFLOP/s on H100 SXM; wgmma is what reaches it."""
    from tessera_core.hardware import WGMMA_PEAK_FRACTION, tensor_tflops

    assert WGMMA_PEAK_FRACTION == 1.0
    for dtype in ("fp16", "bf16"):
        assert tensor_tflops("sm_90a", dtype, wgmma=True) == pytest.approx(989.4, rel=0.002)
        assert tensor_tflops("sm_90", dtype) == pytest.approx(989.4 * 2 / 3, rel=0.002)


def test_fp8_doubles_the_tensor_rate_to_1979_tflops_on_h100() -> None:
    """NVIDIA H100 datasheet: 3958 FP8 TFLOP/s with 2:4 sparsity, 1979 dense (issue 10)."""
    from tessera_core.hardware import TENSOR_RATE_MULTIPLE_BY_DTYPE, tensor_tflops

    assert TENSOR_RATE_MULTIPLE_BY_DTYPE == {"fp16": 1, "bf16": 1, "e4m3": 2}
    assert tensor_tflops("sm_90a", "e4m3", wgmma=True) == pytest.approx(1979, rel=0.002)


def test_an_sm90_device_targets_sm90a_and_every_other_its_own_arch() -> None:
    from tessera_core.hardware import NATIVE_ARCH_SPECIFIC, native_arch

    assert NATIVE_ARCH_SPECIFIC == {"sm_90": "sm_90a"}
    assert native_arch("sm_90") == "sm_90a"
    assert [native_arch(a) for a in ("sm_80", "sm_86", "sm_89", "sm_90a")] == [
        "sm_80",
        "sm_86",
        "sm_89",
        "sm_90a",
    ]
