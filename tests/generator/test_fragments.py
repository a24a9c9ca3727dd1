"""Fragment layouts of the host emulator: mma.m16n8k16, every ldmatrix form, shuffles, f16/bf16.

Each test puts known, distinct values in every lane's registers (or in shared memory), runs one
warp through the host half of tessera/intrinsics.cuh, and checks every output element against the
formulas of shared/reference/ptx-fragments.md, restated here independently of the C++ side.
"""

from __future__ import annotations

import ctypes

import ml_dtypes
import numpy as np
import pytest

from generator.host_build import HostLibrary, array_pointer, build_host_library

LANES = 32

SOURCE = r"""
#include "tessera/intrinsics.cuh"
using tessera::uint32_t;

struct MmaParams { const uint32_t* a; const uint32_t* b; const float* c; float* d; };
template <typename T> static void run_mma(const MmaParams& p) {
  const int lane = threadIdx.x;
  uint32_t a[4], b[2];
  float c[4], d[4];
  for (int i = 0; i < 4; ++i) { a[i] = p.a[lane * 4 + i]; c[i] = p.c[lane * 4 + i]; }
  for (int i = 0; i < 2; ++i) b[i] = p.b[lane * 2 + i];
  tessera::mma_m16n8k16<T>(d, a, b, c);
  for (int i = 0; i < 4; ++i) p.d[lane * 4 + i] = d[i];
}
TESSERA_KERNEL(mma_f16, MmaParams, 32) { run_mma<tessera::f16_t>(p); }
TESSERA_EXPORT(mma_f16, MmaParams)
TESSERA_KERNEL(mma_bf16, MmaParams, 32) { run_mma<tessera::bf16_t>(p); }
TESSERA_EXPORT(mma_bf16, MmaParams)

// Shared memory is filled from `init` (b16 elements), then every lane gives the address of row
// row_of_lane[lane] (16-byte rows) to one ldmatrix form; registers go to out[lane][0..3].
struct LdmParams { const unsigned short* init; int elems; const int* row_of_lane; uint32_t* out; };
#define LDM_KERNEL(name, call)                                                 \
  TESSERA_KERNEL(name, LdmParams, 32) {                                        \
    auto* smem = reinterpret_cast<unsigned short*>(tessera::dynamic_smem());  \
    for (int i = threadIdx.x; i < p.elems; i += 32) smem[i] = p.init[i];       \
    __syncthreads();                                                           \
    const void* row = smem + 8 * p.row_of_lane[threadIdx.x];                   \
    uint32_t r[4] = {0, 0, 0, 0};                                              \
    call;                                                                      \
    for (int j = 0; j < 4; ++j) p.out[threadIdx.x * 4 + j] = r[j];             \
  }                                                                            \
  TESSERA_EXPORT(name, LdmParams)
LDM_KERNEL(ldm_x1, tessera::ldmatrix_x1(r[0], row))
LDM_KERNEL(ldm_x2, tessera::ldmatrix_x2(r[0], r[1], row))
LDM_KERNEL(ldm_x4, tessera::ldmatrix_x4(r[0], r[1], r[2], r[3], row))
LDM_KERNEL(ldm_x1_trans, tessera::ldmatrix_x1_trans(r[0], row))
LDM_KERNEL(ldm_x2_trans, tessera::ldmatrix_x2_trans(r[0], r[1], row))
LDM_KERNEL(ldm_x4_trans, tessera::ldmatrix_x4_trans(r[0], r[1], r[2], r[3], row))

struct ShflParams { const float* in; int lane_mask; float* out; };
TESSERA_KERNEL(shfl, ShflParams, 64) {
  p.out[threadIdx.x] = tessera::shfl_xor(p.in[threadIdx.x], p.lane_mask);
}
TESSERA_EXPORT(shfl, ShflParams)

// One thread converts n floats: RNE to 16 bits (from_float) and back (to_float), and pack2.
struct ConvertParams { const float* in; int n; unsigned short* f16; unsigned short* bf16;
                       float* f16_back; uint32_t* packed; };
TESSERA_KERNEL(convert, ConvertParams, 1) {
  for (int i = 0; i < p.n; ++i) {
    const tessera::f16_t h = tessera::from_float<tessera::f16_t>(p.in[i]);
    const tessera::bf16_t b = tessera::from_float<tessera::bf16_t>(p.in[i]);
    __builtin_memcpy(&p.f16[i], &h, 2);
    __builtin_memcpy(&p.bf16[i], &b, 2);
    p.f16_back[i] = tessera::to_float(h);
  }
  for (int i = 0; i + 1 < p.n; i += 2) {
    p.packed[i / 2] = tessera::pack2<tessera::f16_t>(p.in[i], p.in[i + 1]);
  }
}
TESSERA_EXPORT(convert, ConvertParams)
"""


class MmaParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in ("a", "b", "c", "d")]


class LdmParams(ctypes.Structure):
    _fields_ = [
        ("init", ctypes.c_void_p),
        ("elems", ctypes.c_int),
        ("row_of_lane", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
    ]


class ShflParams(ctypes.Structure):
    _fields_ = [("inp", ctypes.c_void_p), ("lane_mask", ctypes.c_int), ("out", ctypes.c_void_p)]


class ConvertParams(ctypes.Structure):
    _fields_ = [
        ("inp", ctypes.c_void_p),
        ("n", ctypes.c_int),
        ("f16", ctypes.c_void_p),
        ("bf16", ctypes.c_void_p),
        ("f16_back", ctypes.c_void_p),
        ("packed", ctypes.c_void_p),
    ]


@pytest.fixture(scope="module")
def lib() -> HostLibrary:
    return build_host_library(SOURCE)


# The PTX ISA's fragment tables (g = lane >> 2, t = lane % 4), written as Python formulas.
def a_index(lane: int, i: int) -> tuple[int, int]:
    g, t = lane >> 2, lane % 4
    return g + (8 if i in (2, 3, 6, 7) else 0), 2 * t + (i & 1) + (8 if i >= 4 else 0)


def b_index(lane: int, i: int) -> tuple[int, int]:
    g, t = lane >> 2, lane % 4
    return 2 * t + (i & 1) + (8 if i >= 2 else 0), g


def c_index(lane: int, i: int) -> tuple[int, int]:
    g, t = lane >> 2, lane % 4
    return g + (8 if i >= 2 else 0), 2 * t + (i & 1)


NP_DTYPES = {"f16": np.float16, "bf16": ml_dtypes.bfloat16}


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_mma_m16n8k16_every_element_follows_the_fragment_layout(
    lib: HostLibrary, dtype: str
) -> None:
    rng = np.random.default_rng(7)
    # Distinct small integers: every product and sum is exact in fp32, so checks are exact and
    # any lane or element landing in the wrong place changes the result.
    a_mat = rng.permutation(256).reshape(16, 16).astype(np.float64) - 128
    b_mat = (rng.permutation(128).reshape(16, 8).astype(np.float64) - 64) / 4
    c_mat = rng.permutation(128).reshape(16, 8).astype(np.float64) * 3
    np_dtype = NP_DTYPES[dtype]
    a = np.empty((LANES, 8), dtype=np_dtype)
    b = np.empty((LANES, 4), dtype=np_dtype)
    c = np.empty((LANES, 4), dtype=np.float32)
    for lane in range(LANES):
        for i in range(8):
            a[lane, i] = a_mat[a_index(lane, i)]
        for i in range(4):
            b[lane, i] = b_mat[b_index(lane, i)]
            c[lane, i] = c_mat[c_index(lane, i)]
    # the fragment tables cover every element of A exactly once
    assert np.array_equal(np.sort(a.astype(np.float64).ravel()), np.sort(a_mat.ravel()))
    d = np.full((LANES, 4), np.nan, dtype=np.float32)
    a_regs, b_regs = a.view(np.uint32), b.view(np.uint32)
    params = MmaParams(*(array_pointer(x) for x in (a_regs, b_regs, c, d)))
    lib.kernel(f"mma_{dtype}").launch(params, grid=(1,), block=(LANES,), smem_bytes=0)
    expected = a_mat @ b_mat + c_mat
    for lane in range(LANES):
        for i in range(4):
            assert d[lane, i] == expected[c_index(lane, i)], (lane, i)


LDMATRIX_FORMS = [(m, trans) for trans in (False, True) for m in (1, 2, 4)]


@pytest.mark.parametrize(("matrices", "trans"), LDMATRIX_FORMS)
def test_ldmatrix_distributes_rows_to_lanes_and_registers(
    lib: HostLibrary, matrices: int, trans: bool
) -> None:
    rows = 64
    init = np.arange(rows * 8, dtype=np.uint16) * 7 + 3  # distinct element values
    rng = np.random.default_rng(matrices + 10 * trans)
    row_of_lane = rng.permutation(rows)[:LANES].astype(np.int32)
    out = np.full((LANES, 4), 0xDEADBEEF, dtype=np.uint32)
    params = LdmParams(
        array_pointer(init), init.size, array_pointer(row_of_lane), array_pointer(out)
    )
    name = f"ldm_x{matrices}" + ("_trans" if trans else "")
    lib.kernel(name).launch(params, grid=(1,), block=(LANES,), smem_bytes=init.nbytes)
    smem = init.reshape(rows, 8)
    for j in range(matrices):
        m_j = smem[row_of_lane[8 * j : 8 * j + 8]]  # M_j[r] = the row lane 8j+r pointed at
        for lane in range(LANES):
            g, t2 = lane >> 2, 2 * (lane % 4)
            lo, hi = (m_j[t2, g], m_j[t2 + 1, g]) if trans else (m_j[g, t2], m_j[g, t2 + 1])
            reg = int(out[lane, j])
            assert (reg & 0xFFFF, reg >> 16) == (lo, hi), (name, lane, j)
    assert (out[:, matrices:] == 0).all()  # registers the form does not load are left alone


def test_ldmatrix_rejects_a_row_outside_shared_memory(lib: HostLibrary) -> None:
    from tessera_core.errors import EmulatorError

    init = np.arange(64 * 8, dtype=np.uint16)
    row_of_lane = np.arange(LANES, dtype=np.int32)
    row_of_lane[5] = 1000
    out = np.zeros((LANES, 4), dtype=np.uint32)
    params = LdmParams(
        array_pointer(init), init.size, array_pointer(row_of_lane), array_pointer(out)
    )
    with pytest.raises(EmulatorError, match=r"ldm_x4 block \(0,0,0\).*ldmatrix: lane 5 .*outside"):
        lib.kernel("ldm_x4").launch(params, grid=(1,), block=(LANES,), smem_bytes=init.nbytes)


@pytest.mark.parametrize("lane_mask", [1, 2, 4, 8, 16, 31])
def test_shfl_xor_reads_the_partner_lane_in_each_warp(lib: HostLibrary, lane_mask: int) -> None:
    values = np.random.default_rng(lane_mask).standard_normal(2 * LANES).astype(np.float32)
    out = np.full(2 * LANES, np.nan, dtype=np.float32)
    params = ShflParams(array_pointer(values), lane_mask, array_pointer(out))
    lib.kernel("shfl").launch(params, grid=(1,), block=(2 * LANES,), smem_bytes=0)
    for tid in range(2 * LANES):
        partner = (tid // LANES) * LANES + ((tid % LANES) ^ lane_mask)
        assert out[tid] == values[partner], tid


def test_conversions_round_to_nearest_even_like_numpy(lib: HostLibrary) -> None:
    rng = np.random.default_rng(3)
    f16_tiny, f16_max = 2.0**-24, 65504.0
    specials = [
        0.0, -0.0, 1.0, -2.5, f16_tiny, f16_tiny / 2, f16_tiny * 1.5, f16_tiny * 0.75,
        f16_max, 65519.0, 65520.0, -70000.0, 1 + 2**-11, 1 + 3 * 2**-11, 2.0**-14 * 0.999,
        1 + 2**-8, 1 + 3 * 2**-8, 3.4e38, np.inf, -np.inf, np.nan,
    ]  # fmt: skip
    values = np.concatenate([
        np.array(specials, dtype=np.float32),
        (rng.standard_normal(4000) * np.exp2(rng.integers(-30, 20, 4000))).astype(np.float32),
    ])  # fmt: skip
    n = values.size - values.size % 2
    f16 = np.zeros(n, dtype=np.uint16)
    bf16 = np.zeros(n, dtype=np.uint16)
    back = np.full(n, np.nan, dtype=np.float32)
    packed = np.zeros(n // 2, dtype=np.uint32)
    params = ConvertParams(
        array_pointer(values), n, *(array_pointer(x) for x in (f16, bf16, back, packed))
    )
    lib.kernel("convert").launch(params, grid=(1,), block=(1,), smem_bytes=0)
    with np.errstate(over="ignore"):
        want_f16 = values[:n].astype(np.float16)
    want_bf16 = values[:n].astype(ml_dtypes.bfloat16)
    got_f16 = f16.view(np.float16)
    got_bf16 = bf16.view(ml_dtypes.bfloat16)
    nan = np.isnan(values[:n])
    assert np.isnan(got_f16[nan]).all() and np.isnan(got_bf16[nan].astype(np.float32)).all()
    assert np.array_equal(f16[~nan], want_f16.view(np.uint16)[~nan])
    assert np.array_equal(bf16[~nan], want_bf16.view(np.uint16)[~nan])
    assert np.array_equal(back[~nan], want_f16.astype(np.float32)[~nan])
    assert np.array_equal(packed, f16.view(np.uint32))  # element 2i in the low half
