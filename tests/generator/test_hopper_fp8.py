"""FP8 e4m3 on Hopper: the k32 wgmma compiles to QGMMA, and its host twin decodes e4m3 exactly
(PTX ISA ".e4m3": bias 7, no infinities, 0x7f/0xff NaN, subnormals m * 2^-9) and multiplies
K-major 64 x 32-byte tiles with the m64nNk16 accumulator fragment.
"""

from __future__ import annotations

import ctypes

import ml_dtypes
import numpy as np
import pytest

from generator.compile import compile_source
from generator.compile_cache import CompileCache
from generator.host_build import SCHEDULES, HostLibrary, array_pointer, build_host_library
from generator.sass import instruction_counts

# A consumer warpgroup runs four k32 e4m3 wgmmas (N = 128) over two 128B-swizzled tiles whose
# 128-byte rows hold 128 k: 32 bytes of k a step.
DEVICE_SOURCE = r"""
#include "tessera/intrinsics.cuh"
using namespace tessera;
struct Params { float* out; };
TESSERA_KERNEL_SM90(fp8_sample, Params, 128) {
  char* smem = align_smem_1024(dynamic_smem());
  float d[64];
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) {
    const uint64_t da = wgmma_descriptor(smem + ks * 32, 16, 1024, SWIZZLE_128B);
    const uint64_t db = wgmma_descriptor(smem + 8192 + ks * 32, 16, 1024, SWIZZLE_128B);
    wgmma_m64k32_e4m3<128>(d, da, db, ks > 0);
  }
  wgmma_commit_group();
  wgmma_wait_group<0>();
  for (int i = 0; i < 64; ++i) p.out[(blockIdx.x * 128 + threadIdx.x) * 64 + i] = d[i];
}
"""

HOST_SOURCE = r"""
#include "tessera/intrinsics.cuh"
using namespace tessera;

struct DecodeParams { const unsigned char* codes; int n; float* out; };
TESSERA_KERNEL(decode_e4m3, DecodeParams, 1) {
  for (int i = 0; i < p.n; ++i) p.out[i] = host::e4m3_to_float(p.codes[i]);
}
TESSERA_EXPORT(decode_e4m3, DecodeParams)

// Shared memory is filled from `image` (A [64 rows x 128 bytes] then B [64 rows x 128 bytes],
// both K-major, 128B swizzle); one warpgroup runs four k32 e4m3 wgmmas with N = 64.
struct Fp8MmaParams { const unsigned char* image; int image_bytes; float* out; };
TESSERA_KERNEL(wgmma_e4m3, Fp8MmaParams, 128) {
  char* smem = dynamic_smem();
  for (int i = threadIdx.x; i < p.image_bytes; i += 128) smem[i] = p.image[i];
  __syncthreads();
  float d[32];
  wgmma_fence();
  for (int s = 0; s < 4; ++s) {
    const uint64_t da = wgmma_descriptor(smem + s * 32, 16, 1024, SWIZZLE_128B);
    const uint64_t db = wgmma_descriptor(smem + 8192 + s * 32, 16, 1024, SWIZZLE_128B);
    wgmma_m64k32_e4m3<64>(d, da, db, s > 0);
  }
  wgmma_commit_group();
  wgmma_wait_group<0>();
  for (int i = 0; i < 32; ++i) p.out[threadIdx.x * 32 + i] = d[i];
}
TESSERA_EXPORT(wgmma_e4m3, Fp8MmaParams)
"""

# e4m3's largest finite magnitude and its unit roundoff: 3 mantissa bits, u = 2^-4.
E4M3_MAX = 448.0
E4M3_UNIT_ROUNDOFF = 2.0**-4


class DecodeParams(ctypes.Structure):
    _fields_ = [("codes", ctypes.c_void_p), ("n", ctypes.c_int), ("out", ctypes.c_void_p)]


class Fp8MmaParams(ctypes.Structure):
    _fields_ = [("image", ctypes.c_void_p), ("image_bytes", ctypes.c_int), ("out", ctypes.c_void_p)]


@pytest.fixture(scope="module")
def lib() -> HostLibrary:
    return build_host_library(HOST_SOURCE)


def test_k32_e4m3_wgmma_compiles_to_qgmma_without_spills(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    cache = CompileCache(root=tmp_path_factory.mktemp("fp8-compile"))
    compiled = compile_source(DEVICE_SOURCE, kernel_name="fp8_sample", arch="sm_90a", cache=cache)
    assert compiled.resources.spill_store_bytes == compiled.resources.spill_load_bytes == 0
    counts = instruction_counts(compiled.cubin)
    assert counts.get("QGMMA", 0) == 4 and counts.get("HGMMA", 0) == 0  # one per k32 step


def isa_e4m3(code: int) -> float:
    """The PTX ISA's e4m3, restated: sign, 4-bit exponent (bias 7), 3-bit mantissa."""
    sign = -1.0 if code & 0x80 else 1.0
    exponent, mantissa = (code >> 3) & 0xF, code & 0x7
    if exponent == 0xF and mantissa == 0x7:
        return float("nan")
    if exponent == 0:
        return sign * mantissa * 2.0**-9
    return sign * (1 + mantissa / 8) * 2.0 ** (exponent - 7)


def test_every_e4m3_code_decodes_exactly(lib: HostLibrary) -> None:
    codes = np.arange(256, dtype=np.uint8)
    out = np.full(256, -1.0, dtype=np.float32)
    lib.kernel("decode_e4m3").launch(
        DecodeParams(array_pointer(codes), 256, array_pointer(out)),
        grid=(1,), block=(1,), smem_bytes=0,
    )  # fmt: skip
    want = np.array([isa_e4m3(c) for c in range(256)])
    assert np.flatnonzero(np.isnan(out)).tolist() == [0x7F, 0xFF]
    assert np.array_equal(out, want, equal_nan=True)
    assert np.array_equal(
        out, codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32), equal_nan=True
    )
    assert np.nanmax(out) == E4M3_MAX and out[0x01] == 2.0**-9 and out[0x80] == 0.0
    assert np.signbit(out[0x80])


def k_major_fp8_image(codes: np.ndarray) -> bytes:
    """[64 rows, 128 k] e4m3 codes, K-major, 128-byte rows, 128B swizzle (8-row atoms)."""
    out = bytearray(64 * 128)
    for r in range(64):
        for k in range(128):
            logical = r * 128 + k
            out[logical ^ (((logical >> 7) & 7) << 4)] = int(codes[r, k])
    return bytes(out)


def test_k32_e4m3_wgmma_multiplies_k_major_tiles_in_the_accumulator_fragment(
    lib: HostLibrary,
) -> None:
    rng = np.random.default_rng(41)
    # Random finite e4m3 values (NaN codes redrawn), as quantized inputs would be.
    a_codes = rng.integers(0, 256, (64, 128)).astype(np.uint8)
    b_codes = rng.integers(0, 256, (64, 128)).astype(np.uint8)  # [n, k]: K-major B
    for codes in (a_codes, b_codes):
        codes[(codes & 0x7F) == 0x7F] = 0x38  # 1.0
    a = a_codes.view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    b = b_codes.view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    image = np.frombuffer(k_major_fp8_image(a_codes) + k_major_fp8_image(b_codes), np.uint8).copy()
    out = np.full((128, 32), np.nan, dtype=np.float32)
    params = Fp8MmaParams(array_pointer(image), image.size, array_pointer(out))
    for schedule in SCHEDULES:
        lib.kernel("wgmma_e4m3").launch(
            params, grid=(1,), block=(128,), smem_bytes=image.size, schedule=schedule
        )
    want = a @ b.T  # float64 of the dequantized (exact) inputs
    got = np.empty((64, 64))
    for thread in range(128):
        warp, lane = divmod(thread, 32)
        for i in range(32):
            row = 16 * warp + (lane >> 2) + (8 if i % 4 >= 2 else 0)
            col = 8 * (i // 4) + 2 * (lane % 4) + (i % 2)
            got[row, col] = out[thread, i]
    # Products of e4m3 values are exact in float; each k32 step's sum is rounded to float once,
    # then added to the float accumulator: at most 2 roundings of 2^-24 per step, 4 steps.
    bound = 8 * 2.0**-24 * (np.abs(a) @ np.abs(b.T))
    assert np.all(np.abs(got - want) <= bound)
