"""gemm_sm90 with FP8 e4m3 inputs (k32 wgmma, B^T K-major, fp16/bf16 output, per-tensor scale).

NVRTC compiles it for sm_90a into QGMMA (not HGMMA), UTMALDG and SYNCS with no spills; the
emulator runs it at a ragged shape under both schedules against float64.

Error bounds (stated): e4m3 has 3 mantissa bits, unit roundoff u8 = 2^-4.
  * Against float64 on the dequantized inputs the inputs are exact and so are their products
    in fp32; what remains is fp32 accumulation (K * 2^-24) and C's rounding (u_out: 2^-11
    fp16, 2^-8 bf16): normwise relative error <= 2 u_out.
  * Against the unquantized float64 inputs each input is off by at most u8 relatively, so
    |C_q - C| <= (2 u8 + u8^2) |A| |B| elementwise, plus C's rounding: normwise
    ||C_q - C|| <= (2 u8 + u8^2 + 2 u_out) || |A| |B| ||.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from generator import emulator
from generator.compile import CompiledKernel, compile_many
from generator.compile_cache import CompileCache
from generator.render import render
from generator.sass import instruction_counts
from templates.gemm_sm90.family import tensor_maps
from templates.registry import family_for, get_family, kernel_key, select
from templates.tma import TensorMap2D
from tessera_core.types import GemmProblem, TileConfig

ARCH = "sm_90a"
FAMILY = get_family("gemm_sm90")
RAGGED = GemmProblem(200, 136, 272, dtype="e4m3")  # M, N, K tiles all hang over
E4M3_UNIT_ROUNDOFF = 2.0**-4
OUT_UNIT_ROUNDOFF = {"fp16": 2.0**-11, "bf16": 2.0**-8}
DEFAULT_CONFIGS = (
    TileConfig(block_m=128, block_n=128, block_k=128, num_warps=8, num_stages=2),
    TileConfig(block_m=192, block_n=64, block_k=128, num_warps=16, num_stages=3),
)


def all_configs() -> list[TileConfig]:
    return FAMILY.space.valid_configs(RAGGED, ARCH)


def test_e4m3_space_key_and_selection() -> None:
    assert (
        RAGGED.output_dtype == "bf16"
        and RAGGED.io_bytes() == (200 * 272 + 272 * 136) + 2 * 200 * 136
    )
    assert select(RAGGED, ARCH).family is FAMILY
    assert kernel_key(RAGGED, ARCH) == "gemm_sm90.e4m3-bf16.m200.n136.k272.sm_90a"
    assert kernel_key(GemmProblem(64, 64, 64, "e4m3", out_dtype="fp16"), ARCH).startswith(
        "gemm_sm90.e4m3-fp16."
    )
    configs = all_configs()
    assert configs and all(c.block_k == 128 for c in configs)
    assert len(configs) == len(FAMILY.space.valid_configs(GemmProblem(200, 136, 272), ARCH))
    # K % 16 != 0: e4m3 rows of A and B^T are not 16-byte multiples; the mma.sync gemm has no
    # FP8 either, so the fallback names both reasons.
    ragged_k = GemmProblem(64, 64, 72, dtype="e4m3")
    assert "K of 16 for e4m3" in (select(ragged_k, ARCH).fallback_reason or "")
    assert "dtype: dtype=e4m3" in str(family_for(ragged_k, ARCH).space.unsupported(ragged_k, ARCH))
    with pytest.raises(ValueError, match="out_dtype"):
        GemmProblem(8, 8, 8, dtype="bf16", out_dtype="fp16")
    assert GemmProblem(8, 8, 8, "e4m3", out_dtype="bf16") == GemmProblem(8, 8, 8, "e4m3")
    assert dataclasses.replace(RAGGED, dtype="bf16").output_dtype == "bf16"


def test_e4m3_tensor_maps_read_a_and_b_transposed_in_128_byte_rows_of_k() -> None:
    map_a, map_b = tensor_maps(RAGGED, 4096, 8192)
    assert map_a == TensorMap2D(4096, 1, 272, 200, 272, 128, 64, "128B")
    assert map_b == TensorMap2D(8192, 1, 272, 136, 272, 128, 64, "128B")  # B^T [N, K]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> list[CompiledKernel]:
    rendered = [
        render(FAMILY, RAGGED, config, specialized=False, arch=ARCH) for config in DEFAULT_CONFIGS
    ]
    cache = CompileCache(root=Path(tmp_path_factory.mktemp("gemm-sm90-fp8")))
    results = compile_many(rendered, arch=ARCH, cache=cache, executor="thread")
    for result in results:
        if not isinstance(result, CompiledKernel):
            raise result
    return results  # type: ignore[return-value]


def _check_sass(kernel: CompiledKernel) -> None:
    assert kernel.resources.spill_store_bytes == kernel.resources.spill_load_bytes == 0
    counts = instruction_counts(kernel.cubin)
    assert counts.get("QGMMA", 0) > 0 and counts.get("HGMMA", 0) == 0
    assert counts.get("UTMALDG", 0) > 0 and counts.get("SYNCS", 0) > 0


def test_fp8_configs_compile_to_qgmma_tma_and_mbarriers_without_spills(
    compiled: list[CompiledKernel],
) -> None:
    for kernel in compiled:
        _check_sass(kernel)


@pytest.mark.slow
def test_every_valid_fp8_config_compiles_to_qgmma(tmp_path: Path) -> None:
    rendered = [render(FAMILY, RAGGED, c, specialized=False, arch=ARCH) for c in all_configs()]
    for kernel in compile_many(rendered, arch=ARCH, cache=CompileCache(root=tmp_path)):
        assert isinstance(kernel, CompiledKernel), kernel
        _check_sass(kernel)


def _quantized(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    exact = rng.standard_normal(shape)
    return exact, exact.astype(ml_dtypes.float8_e4m3fn)


def _run_and_check(config: TileConfig, out_dtype: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a_exact, a = _quantized(rng, (RAGGED.m, RAGGED.k))
    b_exact, b = _quantized(rng, (RAGGED.k, RAGGED.n))
    scale = 0.75  # per-tensor descales 1.5 * 0.5
    c = emulator.run_gemm(
        a.view(np.uint8) if seed % 2 else a,  # raw codes and float8_e4m3fn alike
        b.view(np.uint8) if seed % 2 else b,
        config=config, arch=ARCH, out_dtype=out_dtype, scale=scale,  # type: ignore[arg-type]
    )  # fmt: skip
    assert c.dtype == emulator.NUMPY_DTYPES[out_dtype] and c.shape == (RAGGED.m, RAGGED.n)
    got = c.astype(np.float64)
    assert np.all(np.isfinite(got)), "a poisoned element of C was never written"
    u_out = OUT_UNIT_ROUNDOFF[out_dtype]
    dequantized = scale * (a.astype(np.float64) @ b.astype(np.float64))
    assert np.linalg.norm(got - dequantized) <= 2 * u_out * np.linalg.norm(dequantized)
    exact = scale * (a_exact @ b_exact)
    magnitude = scale * (np.abs(a_exact) @ np.abs(b_exact))
    u8 = E4M3_UNIT_ROUNDOFF
    bound = (2 * u8 + u8**2 + 2 * u_out) * np.linalg.norm(magnitude)
    assert np.linalg.norm(got - exact) <= bound


@pytest.mark.parametrize(
    ("config", "out_dtype"), [(DEFAULT_CONFIGS[0], "bf16"), (DEFAULT_CONFIGS[1], "fp16")]
)
def test_fp8_gemm_on_the_emulator_matches_float64(config: TileConfig, out_dtype: str) -> None:
    _run_and_check(config, out_dtype, seed=DEFAULT_CONFIGS.index(config))


@pytest.mark.slow
def test_every_valid_fp8_config_matches_float64_on_the_emulator() -> None:
    for index, config in enumerate(all_configs()):
        _run_and_check(config, "bf16", seed=index)
