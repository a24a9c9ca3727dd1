"""The Hopper intrinsics attention_sm90 adds, host half, against the PTX ISA restated here.

wgmma with A from registers (the register fragment of m64nNk16: warp w holds rows 16w..16w+15
in the mma.m16n8k16 A layout), FP8 e4m3 k32 wgmma (A from shared memory or registers) and the
e4m3 conversion against ml_dtypes, named barriers (bar.sync / bar.arrive with a thread count) and
3-D TMA boxes whose out-of-bounds zero fill is per dimension (a box past the end of one plane
reads zeros, not the next plane).
"""

from __future__ import annotations

import ctypes

import ml_dtypes
import numpy as np
import pytest

from generator.host_build import HostLibrary, array_pointer, build_host_library
from templates.tma import TensorMap3D, TensorMapBytes
from tessera_core.errors import EmulatorError

SOURCE = r"""
#include "tessera/intrinsics.cuh"
using namespace tessera;

// D[64 x 64] = A[64 x 16] (registers) * B (64 n x 16 k, K-major, no swizzle, from `image`).
// Thread t (warp w, g = lane / 4, q = lane % 4) packs register r from A[16w + g + 8 (r % 2)]
// [2q + 8 (r / 2) + {0, 1}] (PTX ISA, wgmma register fragment of A for .f16).
struct RsParams { const unsigned short* a; const unsigned char* image; int image_bytes;
                  unsigned lbo, sbo; int skip_fence; float* out; };
TESSERA_KERNEL(wgmma_rs, RsParams, 128) {
  char* smem = dynamic_smem();
  for (int i = threadIdx.x; i < p.image_bytes; i += 128) smem[i] = p.image[i];
  __syncthreads();
  const int t = threadIdx.x, w = t / 32, g = (t % 32) / 4, q = t % 4;
  uint32_t a[4];
  for (int r = 0; r < 4; ++r) {
    const int row = 16 * w + g + 8 * (r % 2), col = 2 * q + 8 * (r / 2);
    a[r] = p.a[row * 16 + col] | (static_cast<uint32_t>(p.a[row * 16 + col + 1]) << 16);
  }
  float d[32];
  for (int i = 0; i < 32; ++i) d[i] = -1.0f;
  if (!p.skip_fence) wgmma_fence();
  wgmma_m64k16_rs<f16_t, 64, 0>(d, a, wgmma_descriptor(smem, p.lbo, p.sbo, SWIZZLE_NONE), false);
  a[0] = a[1] = a[2] = a[3] = 0;  // captured at issue: changing them now changes nothing
  wgmma_commit_group();
  wgmma_wait_group<0>();
  for (int i = 0; i < 32; ++i) p.out[t * 32 + i] = d[i];
}
TESSERA_EXPORT(wgmma_rs, RsParams)

// Warp 1 publishes a value and arrives on named barrier 1; warp 0 syncs on it and reads it.
// mode 1: warp 1 never arrives (a deadlock); mode 2: warp 1 names another thread count.
struct NamedParams { int mode; int* out; };
TESSERA_KERNEL(named, NamedParams, 64) {
  int* value = reinterpret_cast<int*>(dynamic_smem());
  if (threadIdx.x < 32) {
    named_barrier_sync(1, 64);
    p.out[threadIdx.x] = *value;
  } else if (p.mode != 1) {
    if (threadIdx.x == 32) *value = 7;
    named_barrier_arrive(1, p.mode == 2 ? 32 : 64);
  }
}
TESSERA_EXPORT(named, NamedParams)

// Thread 0 loads one 3-D box at (x, y, z); every thread waits, then the bytes are copied out.
struct Tma3dParams { tensor_map_t map; int x, y, z, box_bytes; unsigned char* out; };
TESSERA_KERNEL(tma_box_3d, Tma3dParams, 32) {
  char* smem = dynamic_smem();
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + p.box_bytes);
  if (threadIdx.x == 0) mbarrier_init(bar, 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    mbarrier_arrive_expect_tx(bar, p.box_bytes);
    tma_load_3d(smem, &p.map, bar, p.x, p.y, p.z);
  }
  mbarrier_wait_parity(bar, 0);
  for (int i = threadIdx.x; i < p.box_bytes; i += 32) p.out[i] = smem[i];
}
TESSERA_EXPORT(tma_box_3d, Tma3dParams)
// e4m3 k32, N = 128: D = A[64 x 32] * B (128 n x 32 k), both K-major without swizzle in `image`
// (A at 0, B at b_offset), or A from registers: register r of thread t (warp w, g, q) holds
// bytes A[16w + g + 8 (r % 2)][16 (r / 2) + 4q + j], j = 0..3 (the 8-bit A fragment).
struct E4m3Params { const unsigned char* a; const unsigned char* image; int image_bytes;
                    int b_offset; unsigned a_lbo, b_lbo, sbo; int from_regs; float* out; };
TESSERA_KERNEL(wgmma_e4m3, E4m3Params, 128) {
  char* smem = dynamic_smem();
  for (int i = threadIdx.x; i < p.image_bytes; i += 128) smem[i] = p.image[i];
  __syncthreads();
  const int t = threadIdx.x, w = t / 32, g = (t % 32) / 4, q = t % 4;
  uint32_t a[4];
  for (int r = 0; r < 4; ++r) {
    a[r] = 0;
    for (int j = 0; j < 4; ++j) {
      const int row = 16 * w + g + 8 * (r % 2), col = 16 * (r / 2) + 4 * q + j;
      a[r] |= static_cast<uint32_t>(p.a[row * 32 + col]) << (8 * j);
    }
  }
  float d[64];
  for (int i = 0; i < 64; ++i) d[i] = -1.0f;
  const uint64_t desc_b =
      wgmma_descriptor(smem + p.b_offset, p.b_lbo, p.sbo, SWIZZLE_NONE);
  wgmma_fence();
  if (p.from_regs) {
    wgmma_m64k32_e4m3_rs<128>(d, a, desc_b, false);
  } else {
    wgmma_m64k32_e4m3<128>(d, wgmma_descriptor(smem, p.a_lbo, p.sbo, SWIZZLE_NONE), desc_b, false);
  }
  wgmma_commit_group();
  wgmma_wait_group<0>();
  for (int i = 0; i < 64; ++i) p.out[t * 64 + i] = d[i];
}
TESSERA_EXPORT(wgmma_e4m3, E4m3Params)

struct PackParams { const float* x; int n; unsigned* out; };
TESSERA_KERNEL(pack_e4m3, PackParams, 1) {
  for (int i = 0; i < p.n / 4; ++i) {
    p.out[i] = pack4_e4m3(p.x[4 * i], p.x[4 * i + 1], p.x[4 * i + 2], p.x[4 * i + 3]);
  }
}
TESSERA_EXPORT(pack_e4m3, PackParams)
"""


class RsParams(ctypes.Structure):
    _fields_ = [
        ("a", ctypes.c_void_p),
        ("image", ctypes.c_void_p),
        ("image_bytes", ctypes.c_int),
        ("lbo", ctypes.c_uint),
        ("sbo", ctypes.c_uint),
        ("skip_fence", ctypes.c_int),
        ("out", ctypes.c_void_p),
    ]


class E4m3Params(ctypes.Structure):
    _fields_ = [
        ("a", ctypes.c_void_p),
        ("image", ctypes.c_void_p),
        ("image_bytes", ctypes.c_int),
        ("b_offset", ctypes.c_int),
        ("a_lbo", ctypes.c_uint),
        ("b_lbo", ctypes.c_uint),
        ("sbo", ctypes.c_uint),
        ("from_regs", ctypes.c_int),
        ("out", ctypes.c_void_p),
    ]


class PackParams(ctypes.Structure):
    _fields_ = [("x", ctypes.c_void_p), ("n", ctypes.c_int), ("out", ctypes.c_void_p)]


class NamedParams(ctypes.Structure):
    _fields_ = [("mode", ctypes.c_int), ("out", ctypes.c_void_p)]


class Tma3dParams(ctypes.Structure):
    _fields_ = [
        ("map", TensorMapBytes),
        ("x", ctypes.c_int),
        ("y", ctypes.c_int),
        ("z", ctypes.c_int),
        ("box_bytes", ctypes.c_int),
        ("out", ctypes.c_void_p),
    ]


@pytest.fixture(scope="module")
def lib() -> HostLibrary:
    return build_host_library(SOURCE)


LBO, SBO = 1024, 128  # bytes: the second 8-k half after all 64 rows' first halves; 8-row groups


def k_major_image(b: np.ndarray) -> np.ndarray:
    """B [n, k] f16 in the K-major no-swizzle canonical layout ((8,m),(T,2k)):((1T,SBO),(1,LBO))."""
    image = np.zeros(2 * LBO, dtype=np.uint8)
    bits = b.view(np.uint16)
    for n in range(b.shape[0]):
        for k in range(b.shape[1]):
            offset = (n % 8) * 16 + (n // 8) * SBO + (k % 8) * 2 + (k // 8) * LBO
            image[offset : offset + 2] = np.frombuffer(bits[n, k].tobytes(), np.uint8)
    return image


def run_rs(lib: HostLibrary, a: np.ndarray, b: np.ndarray, skip_fence: int = 0) -> np.ndarray:
    image = k_major_image(b)
    out = np.zeros((128, 32), dtype=np.float32)
    params = RsParams(
        array_pointer(a), array_pointer(image), image.size, LBO, SBO, skip_fence, array_pointer(out)
    )
    lib.kernel("wgmma_rs").launch(params, grid=(1,), block=(128,), smem_bytes=image.size)
    return out


def test_wgmma_with_a_from_registers_multiplies_the_register_fragment(lib: HostLibrary) -> None:
    rng = np.random.default_rng(4)
    a = rng.standard_normal((64, 16)).astype(np.float16)
    b = rng.standard_normal((64, 16)).astype(np.float16)  # [n, k]
    out = run_rs(lib, a, b)
    want = a.astype(np.float64) @ b.astype(np.float64).T
    got = np.empty((64, 64))
    for t in range(128):  # accumulator: row 16w + g + 8 ((i % 4) >= 2), col 8 (i / 4) + 2q + i % 2
        w, g, q = t // 32, t % 32 // 4, t % 4
        for i in range(32):
            got[16 * w + g + 8 * (i % 4 >= 2), 8 * (i // 4) + 2 * q + i % 2] = out[t, i]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_wgmma_with_a_from_registers_needs_a_fence(lib: HostLibrary) -> None:
    a = np.ones((64, 16), dtype=np.float16)
    with pytest.raises(EmulatorError, match=r"without a wgmma\.fence"):
        run_rs(lib, a, a, skip_fence=1)


def run_named(lib: HostLibrary, mode: int) -> np.ndarray:
    out = np.zeros(32, dtype=np.int32)
    params = NamedParams(mode, array_pointer(out))
    lib.kernel("named").launch(params, grid=(1,), block=(64,), smem_bytes=16)
    return out


def test_named_barrier_orders_an_arriving_warp_before_a_syncing_one(lib: HostLibrary) -> None:
    assert (run_named(lib, 0) == 7).all()


def test_a_named_barrier_nobody_completes_is_a_deadlock(lib: HostLibrary) -> None:
    with pytest.raises(EmulatorError, match=r"deadlock: thread 0 waits .* on a named barrier"):
        run_named(lib, 1)


def test_named_barrier_arrivals_must_agree_on_the_thread_count(lib: HostLibrary) -> None:
    expected = (
        r"barrier 1 expects 32 threads, but the arrival at line \d+ in the same phase named 64"
    )
    with pytest.raises(EmulatorError, match=expected):
        run_named(lib, 2)


def test_tma_3d_box_reads_its_plane_and_zeros_past_its_end(lib: HostLibrary) -> None:
    depth, rows, cols, box_rows = 2, 5, 64, 8
    tensor = np.arange(depth * rows * cols, dtype=np.uint16).reshape(depth, rows, cols) + 1
    tensor_map = TensorMap3D(
        address=tensor.ctypes.data, elem_bytes=2, inner=cols, outer=rows,
        outer_stride_bytes=cols * 2, box_inner=cols, box_outer=box_rows, swizzle="none",
        depth=depth, depth_stride_bytes=rows * cols * 2,
    )  # fmt: skip
    for z in range(depth):
        out = np.zeros(box_rows * cols, dtype=np.uint16)
        params = Tma3dParams(
            tensor_map.host_bytes(), 0, 1, z, tensor_map.box_bytes, array_pointer(out)
        )
        smem_bytes = tensor_map.box_bytes + 8
        lib.kernel("tma_box_3d").launch(params, grid=(1,), block=(32,), smem_bytes=smem_bytes)
        box = out.reshape(box_rows, cols)
        np.testing.assert_array_equal(box[: rows - 1], tensor[z, 1:])  # rows 1..4 of plane z
        assert (box[rows - 1 :] == 0).all()  # past the plane's end: zeros, not plane z + 1


E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)


def k_major_bytes(rows: np.ndarray, lbo: int, sbo: int) -> np.ndarray:
    """[rows, 32] bytes in the K-major no-swizzle layout ((8,m),(16,2)):((16,SBO),(1,LBO))."""
    image = np.zeros(2 * lbo, dtype=np.uint8)
    for n in range(rows.shape[0]):
        for k in range(rows.shape[1]):
            image[(n % 8) * 16 + (n // 8) * sbo + (k % 16) + (k // 16) * lbo] = rows[n, k]
    return image


@pytest.mark.parametrize("from_regs", [0, 1])
def test_e4m3_wgmma_k32_reads_both_operand_forms(lib: HostLibrary, from_regs: int) -> None:
    rng = np.random.default_rng(6)
    a = rng.standard_normal((64, 32)).astype(E4M3)
    b = rng.standard_normal((128, 32)).astype(E4M3)  # [n, k]
    a_image, b_image = (
        k_major_bytes(a.view(np.uint8), 1024, 128),
        k_major_bytes(b.view(np.uint8), 2048, 128),
    )
    image = np.concatenate([a_image, b_image])
    a_bits = np.ascontiguousarray(a.view(np.uint8))
    out = np.zeros((128, 64), dtype=np.float32)
    params = E4m3Params(
        array_pointer(a_bits), array_pointer(image), image.size, a_image.size, 1024, 2048, 128,
        from_regs, array_pointer(out),
    )  # fmt: skip
    lib.kernel("wgmma_e4m3").launch(params, grid=(1,), block=(128,), smem_bytes=image.size)
    want = a.astype(np.float64) @ b.astype(np.float64).T
    got = np.empty((64, 128))
    for t in range(128):
        w, g, q = t // 32, t % 32 // 4, t % 4
        for i in range(64):
            got[16 * w + g + 8 * (i % 4 >= 2), 8 * (i // 4) + 2 * q + i % 2] = out[t, i]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_pack4_e4m3_rounds_to_nearest_even_and_saturates(lib: HostLibrary) -> None:
    rng = np.random.default_rng(8)
    special = [0.0, -0.0, 448.0, 464.0, 1e6, -1e6, 2.0**-9, 2.0**-10, 3 * 2.0**-11, 1.0625, 1.1875]
    x = np.concatenate([special, rng.standard_normal(4096) * 8, rng.standard_normal(1021) * 0.01])
    x = x[: len(x) // 4 * 4].astype(np.float32)
    out = np.zeros(len(x) // 4, dtype=np.uint32)
    params = PackParams(array_pointer(x), len(x), array_pointer(out))
    lib.kernel("pack_e4m3").launch(params, grid=(1,), block=(1,), smem_bytes=0)
    want = np.clip(x, -448, 448).astype(E4M3).view(np.uint8)  # satfinite, then RNE
    np.testing.assert_array_equal(out.view(np.uint8), want)
