"""Hopper layouts of the host emulator against the PTX ISA, restated here independently.

Descriptor bits ("Matrix Descriptor Format"), the canonical layouts of every swizzle mode and
major-ness checked on the ISA's own worked examples ("Canonical Layouts"), the wgmma m64nNk16
accumulator fragment, and TMA box copies with their swizzle and out-of-bounds zero fill. Each
C++ check runs through the host half of tessera/intrinsics.cuh.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from generator.host_build import SCHEDULES, HostLibrary, array_pointer, build_host_library
from templates.tma import TensorMap2D, TensorMapBytes
from tessera_core.errors import EmulatorError

SOURCE = r"""
#include "tessera/intrinsics.cuh"
using namespace tessera;

// out[i] = the physical byte address wgmma reads for element (rows[i], ks[i]) of `desc`.
struct AddrParams { unsigned long long desc; int k_major; int elem_bytes; int n;
                    const int* rows; const int* ks; unsigned* out; };
TESSERA_KERNEL(element_address, AddrParams, 1) {
  for (int i = 0; i < p.n; ++i) {
    p.out[i] = descriptor_element_address(p.desc, p.rows[i], p.ks[i], p.k_major != 0,
                                          p.elem_bytes);
  }
}
TESSERA_EXPORT(element_address, AddrParams)

struct DescParams { unsigned start, lbo, sbo; int swizzle; unsigned long long* out; };
TESSERA_KERNEL(encode_descriptor, DescParams, 1) {
  *p.out = make_wgmma_descriptor(p.start, p.lbo, p.sbo, p.swizzle);
}
TESSERA_EXPORT(encode_descriptor, DescParams)

// Shared memory is filled from `image`; one warpgroup runs k_steps wgmmas (N = 64, f16) with A
// at shared offset 0 and B at b_offset, the start of step s advanced by a_step / b_step bytes;
// the accumulators (zero-initialised unless skip_init) go to out[thread][32].
struct MmaParams { const unsigned char* image; int image_bytes; int b_offset;
                   unsigned a_lbo, a_sbo, b_lbo, b_sbo; int a_swizzle, b_swizzle;
                   int a_step, b_step, k_steps, skip_fence; float* out; };
template <int TRANS_B> static void run_wgmma(const MmaParams& p) {
  char* smem = dynamic_smem();
  for (int i = threadIdx.x; i < p.image_bytes; i += 128) smem[i] = p.image[i];
  __syncthreads();
  float d[32];
  for (int i = 0; i < 32; ++i) d[i] = 0.0f;
  if (!p.skip_fence) wgmma_fence();
  for (int s = 0; s < p.k_steps; ++s) {
    const uint64_t da = wgmma_descriptor(smem + s * p.a_step, p.a_lbo, p.a_sbo, p.a_swizzle);
    const uint64_t db = wgmma_descriptor(smem + p.b_offset + s * p.b_step, p.b_lbo, p.b_sbo,
                                         p.b_swizzle);
    wgmma_m64k16<f16_t, 64, TRANS_B>(d, da, db, s > 0);
  }
  wgmma_commit_group();
  wgmma_wait_group<0>();
  for (int i = 0; i < 32; ++i) p.out[threadIdx.x * 32 + i] = d[i];
}
TESSERA_KERNEL(wgmma_kb, MmaParams, 128) { run_wgmma<0>(p); }
TESSERA_EXPORT(wgmma_kb, MmaParams)
TESSERA_KERNEL(wgmma_nb, MmaParams, 128) { run_wgmma<1>(p); }
TESSERA_EXPORT(wgmma_nb, MmaParams)

// Warp 1 publishes a value behind an mbarrier of count 32 (every lane arrives); warp 0 waits for
// phase 0 and reads it. Before anyone arrives, thread 0 records whether parity 1 (the phase
// "before" phase 0) counts as complete, in out[32]. mode 1: nobody arrives (a deadlock).
struct ParityParams { int mode; int* out; };
TESSERA_KERNEL(parity, ParityParams, 64) {
  char* smem = dynamic_smem();
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem);
  int* value = reinterpret_cast<int*>(smem + 8);
  if (threadIdx.x == 0) {
    mbarrier_init(bar, 32);
    p.out[32] = mbarrier_try_wait_parity(bar, 1) ? 1 : 0;
  }
  __syncthreads();
  if (threadIdx.x < 32) {
    mbarrier_wait_parity(bar, 0);
    p.out[threadIdx.x] = *value;
  } else if (p.mode == 0) {
    if (threadIdx.x == 32) *value = 7;
    mbarrier_arrive(bar);
  }
}
TESSERA_EXPORT(parity, ParityParams)

// Thread 5 of the warpgroup skips the fence the others execute: a divergent warpgroup.
struct DivergeParams { int unused; };
TESSERA_KERNEL(diverge, DivergeParams, 128) {
  if (threadIdx.x == 5) {
    wgmma_commit_group();
  } else {
    wgmma_fence();
  }
}
TESSERA_EXPORT(diverge, DivergeParams)

// Thread 0 loads one TMA box at (x, y) into shared memory; every thread waits on the barrier,
// then the box's bytes are copied out raw (swizzle included).
struct TmaParams { tensor_map_t map; int x, y, box_bytes, skip_expect_tx; unsigned char* out; };
TESSERA_KERNEL(tma_box, TmaParams, 64) {
  char* smem = dynamic_smem();
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + p.box_bytes);
  if (threadIdx.x == 0) mbarrier_init(bar, 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    if (p.skip_expect_tx) mbarrier_arrive(bar);
    else mbarrier_arrive_expect_tx(bar, p.box_bytes);
    tma_load_2d(smem, &p.map, bar, p.x, p.y);
  }
  mbarrier_wait_parity(bar, 0);
  for (int i = threadIdx.x; i < p.box_bytes; i += 64) p.out[i] = smem[i];
}
TESSERA_EXPORT(tma_box, TmaParams)
"""


class AddrParams(ctypes.Structure):
    _fields_ = [
        ("desc", ctypes.c_uint64),
        ("k_major", ctypes.c_int),
        ("elem_bytes", ctypes.c_int),
        ("n", ctypes.c_int),
        ("rows", ctypes.c_void_p),
        ("ks", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
    ]


class DescParams(ctypes.Structure):
    _fields_ = [
        ("start", ctypes.c_uint),
        ("lbo", ctypes.c_uint),
        ("sbo", ctypes.c_uint),
        ("swizzle", ctypes.c_int),
        ("out", ctypes.c_void_p),
    ]


class MmaParams(ctypes.Structure):
    _fields_ = [
        ("image", ctypes.c_void_p),
        ("image_bytes", ctypes.c_int),
        ("b_offset", ctypes.c_int),
        ("a_lbo", ctypes.c_uint),
        ("a_sbo", ctypes.c_uint),
        ("b_lbo", ctypes.c_uint),
        ("b_sbo", ctypes.c_uint),
        ("a_swizzle", ctypes.c_int),
        ("b_swizzle", ctypes.c_int),
        ("a_step", ctypes.c_int),
        ("b_step", ctypes.c_int),
        ("k_steps", ctypes.c_int),
        ("skip_fence", ctypes.c_int),
        ("out", ctypes.c_void_p),
    ]


class ParityParams(ctypes.Structure):
    _fields_ = [("mode", ctypes.c_int), ("out", ctypes.c_void_p)]


class DivergeParams(ctypes.Structure):
    _fields_ = [("unused", ctypes.c_int)]


class TmaParams(ctypes.Structure):
    _fields_ = [
        ("map", TensorMapBytes),
        ("x", ctypes.c_int),
        ("y", ctypes.c_int),
        ("box_bytes", ctypes.c_int),
        ("skip_expect_tx", ctypes.c_int),
        ("out", ctypes.c_void_p),
    ]


@pytest.fixture(scope="module")
def lib() -> HostLibrary:
    return build_host_library(SOURCE)


SWIZZLE = {"none": 0, "128B": 1, "64B": 2, "32B": 3}
SWIZZLE_B = {"none": 0, "128B": 3, "64B": 2, "32B": 1}  # CuTe Swizzle<B,4,3>


def swizzle(byte_address: int, mode: str) -> int:
    """CuTe Swizzle<B,4,3> on a byte address: bits [4, 4+B) ^= bits [7, 7+B)."""
    mask = (1 << SWIZZLE_B[mode]) - 1
    return byte_address ^ (((byte_address >> 7) & mask) << 4)


def cute_offset(coord: tuple[int, ...], shape: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """A flat CuTe layout: coordinate (colexicographic within each mode already split)."""
    return sum(c * s for c, s in zip(coord, stride, strict=True))


def split(index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A 1-D index into a hierarchical mode of `shape` (CuTe's colexicographic order)."""
    out = []
    for extent in shape:
        out.append(index % extent)
        index //= extent
    return tuple(out)


def exact_address(
    row: int,
    k: int,
    layout: tuple[tuple[tuple[int, ...], tuple[int, ...]], tuple[tuple[int, ...], tuple[int, ...]]],
    elem_bytes: int,
    mode: str,
) -> int:
    """Swizzle o layout at (row, k), the ISA's "Exact layout" (element strides) in bytes."""
    (row_shape, row_stride), (k_shape, k_stride) = layout
    elems = cute_offset(split(row, row_shape), row_shape, row_stride) + cute_offset(
        split(k, k_shape), k_shape, k_stride
    )
    return swizzle(elems * elem_bytes, mode)


# The PTX ISA's worked examples ("Canonical Layouts"): (major-ness, swizzle, element bytes,
# exact layout ((row shape, row stride), (k shape, k stride)), LBO bytes, SBO bytes).
ISA_EXAMPLES = [
    ("K", "none", 4, (((8, 2), (4, 32)), ((4, 4), (1, 64))), 64 * 4, 32 * 4),
    ("K", "32B", 4, (((8, 2), (8, 64)), ((4, 4), (1, 4))), 16, 64 * 4),
    ("MN", "none", 2, (((8, 1, 2), (1, 8, 64)), ((8, 2), (8, 128))), 128 * 2, 64 * 2),
    ("MN", "32B", 2, (((8, 2, 2), (1, 8, 128)), ((8, 2), (16, 256))), 128 * 2, 256 * 2),
    ("MN", "64B", 2, (((8, 4, 2), (1, 8, 256)), ((8, 2), (32, 512))), 256 * 2, 512 * 2),
    # CUTLASS's f16 atoms tiled twice along rows: Sw<3,4,3> o (8,64):(64,1) K-major, and
    # Sw<3,4,3> o (64,8):(1,64) MN-major, each repeated at SBO / LBO = 1024 bytes.
    ("K", "128B", 2, (((8, 2), (64, 512)), ((64,), (1,))), 16, 1024),
    ("MN", "128B", 2, (((8, 8, 2), (1, 8, 512)), ((8,), (64,))), 1024, 2048),
]


def run_addresses(
    lib: HostLibrary, desc: int, k_major: bool, elem_bytes: int, coords: list[tuple[int, int]]
) -> np.ndarray:
    rows = np.array([r for r, _ in coords], dtype=np.int32)
    ks = np.array([k for _, k in coords], dtype=np.int32)
    out = np.zeros(len(coords), dtype=np.uint32)
    params = AddrParams(
        desc, int(k_major), elem_bytes, len(coords), *(array_pointer(x) for x in (rows, ks, out))
    )
    lib.kernel("element_address").launch(params, grid=(1,), block=(1,), smem_bytes=0)
    return out


def encode(lib: HostLibrary, start: int, lbo: int, sbo: int, mode: str) -> int:
    out = np.zeros(1, dtype=np.uint64)
    params = DescParams(start, lbo, sbo, SWIZZLE[mode], array_pointer(out))
    lib.kernel("encode_descriptor").launch(params, grid=(1,), block=(1,), smem_bytes=0)
    return int(out[0])


def test_descriptor_bits_follow_the_matrix_descriptor_format(lib: HostLibrary) -> None:
    # bits 13-0 start >> 4, 29-16 LBO >> 4, 45-32 SBO >> 4, 63-62 swizzle; addresses masked
    # to 18 bits first (matrix-descriptor-encode(x) = (x & 0x3FFFF) >> 4).
    desc = encode(lib, 0x4_2340, 64 * 4, 32 * 4, "none")  # bit 18 is dropped
    assert desc == (0x2340 >> 4) | (16 << 16) | (8 << 32)
    assert encode(lib, 0x400, 16, 1024, "128B") == 0x40 | (1 << 16) | (64 << 32) | (1 << 62)
    assert encode(lib, 0, 0, 0, "64B") == 2 << 62
    assert encode(lib, 0, 0, 0, "32B") == 3 << 62


@pytest.mark.parametrize(("major", "mode", "elem_bytes", "layout", "lbo", "sbo"), ISA_EXAMPLES)
def test_descriptor_reads_the_isa_example_layout(
    lib: HostLibrary,
    major: str,
    mode: str,
    elem_bytes: int,
    layout: tuple[tuple[tuple[int, ...], tuple[int, ...]], tuple[tuple[int, ...], tuple[int, ...]]],
    lbo: int,
    sbo: int,
) -> None:
    rows = int(np.prod(layout[0][0]))
    ks = int(np.prod(layout[1][0]))
    base = 2048  # a 1024-byte boundary: the swizzle pattern starts there (base offset 0)
    desc = encode(lib, base, lbo, sbo, mode)
    coords = [(r, k) for r in range(rows) for k in range(ks)]
    got = run_addresses(lib, desc, major == "K", elem_bytes, coords)
    want = [base + exact_address(r, k, layout, elem_bytes, mode) for r, k in coords]
    assert got.tolist() == want
    # Every element has its own bytes. (The ISA's K-major 32B example repeats k past one
    # swizzled row, where the canonical form overlaps the next row: one wgmma never goes there.)
    row_elems = ks if mode == "none" else {"32B": 32, "64B": 64, "128B": 128}[mode] // elem_bytes
    one_row = [a for (r, k), a in zip(coords, want, strict=True) if major == "MN" or k < row_elems]
    assert len(set(one_row)) == len(one_row)


@pytest.mark.parametrize("mode", ["128B", "64B", "32B"])
def test_swizzle_xors_the_chunk_with_the_row_within_the_pattern(
    lib: HostLibrary, mode: str
) -> None:
    row_bytes = {"128B": 128, "64B": 64, "32B": 32}[mode]
    chunks = row_bytes // 16
    # K-major f16 rows of exactly one swizzled row each (SBO = 8 rows): chunk c of row r lands
    # at chunk c ^ (r % chunks) of 128-byte line r.
    desc = encode(lib, 0, 16, 8 * row_bytes, mode)
    coords = [(r, 8 * c) for r in range(16) for c in range(chunks)]
    got = run_addresses(lib, desc, True, 2, coords)
    for (r, k), address in zip(coords, got, strict=True):
        logical = (r % 8) * row_bytes + (r // 8) * 8 * row_bytes + 2 * k
        line, chunk = divmod(logical, 128)
        assert address == line * 128 + ((chunk // 16) ^ (line % chunks)) * 16 + chunk % 16


def wgmma_d_index(thread: int, i: int) -> tuple[int, int]:
    """m64nNk16 accumulator: warp w rows 16w..16w+15, the m16n8 C layout per 8 columns."""
    warp, lane = divmod(thread, 32)
    g, q = lane >> 2, lane % 4
    return 16 * warp + g + (8 if i % 4 >= 2 else 0), 8 * (i // 4) + 2 * q + (i % 2)


def k_major_image(mat: np.ndarray, mode: str) -> bytes:
    """[rows, 64] f16, K-major, 128-byte rows, 8-row groups 1024 bytes apart, swizzled."""
    out = bytearray(mat.shape[0] * 128)
    raw = mat.astype(np.float16)
    for r in range(mat.shape[0]):
        for k in range(64):
            address = swizzle(r * 128 + 2 * k, mode)
            out[address : address + 2] = raw[r, k].tobytes()
    return bytes(out)


def n_major_image(mat: np.ndarray) -> bytes:
    """[64 (k), 64 (n)] f16, N-major, 128-byte rows of n, 128B swizzle (one 1024-byte atom/8 k)."""
    out = bytearray(64 * 128)
    raw = mat.astype(np.float16)
    for k in range(64):
        for n in range(64):
            address = swizzle(k * 128 + 2 * n, "128B")
            out[address : address + 2] = raw[k, n].tobytes()
    return bytes(out)


def run_wgmma(
    lib: HostLibrary,
    name: str,
    image: bytes,
    *,
    b_offset: int,
    a_desc: tuple[int, int, str],
    b_desc: tuple[int, int, str],
    steps: tuple[int, int],
    skip_fence: bool = False,
) -> np.ndarray:
    buf = np.frombuffer(image, dtype=np.uint8).copy()
    out = np.full((128, 32), np.nan, dtype=np.float32)
    params = MmaParams(
        array_pointer(buf),
        buf.size,
        b_offset,
        a_desc[0],
        a_desc[1],
        b_desc[0],
        b_desc[1],
        SWIZZLE[a_desc[2]],
        SWIZZLE[b_desc[2]],
        steps[0],
        steps[1],
        4,
        int(skip_fence),
        array_pointer(out),
    )
    for schedule in SCHEDULES:
        lib.kernel(name).launch(
            params, grid=(1,), block=(128,), smem_bytes=buf.size, schedule=schedule
        )
    return out


def small_ints(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    # Small integers: every product and sum is exact, so any misplaced element shows.
    return rng.integers(-8, 9, shape).astype(np.float64)


@pytest.mark.parametrize("trans_b", [False, True])
def test_wgmma_m64n64k16_accumulator_fragment_and_both_b_layouts(
    lib: HostLibrary, trans_b: bool
) -> None:
    rng = np.random.default_rng(5 + trans_b)
    a = small_ints(rng, (64, 64))  # [m, k]
    b = small_ints(rng, (64, 64))  # [k, n]
    if trans_b:  # B N-major: 128-byte rows of n per k; 8 k-rows per 1024-byte atom (SBO)
        image = k_major_image(a, "128B") + n_major_image(b)
        out = run_wgmma(
            lib, "wgmma_nb", image, b_offset=8192,
            a_desc=(16, 1024, "128B"), b_desc=(1024, 1024, "128B"), steps=(32, 16 * 128),
        )  # fmt: skip
    else:  # B K-major: rows of n hold 64 k each
        image = k_major_image(a, "128B") + k_major_image(b.T, "128B")
        out = run_wgmma(
            lib, "wgmma_kb", image, b_offset=8192,
            a_desc=(16, 1024, "128B"), b_desc=(16, 1024, "128B"), steps=(32, 32),
        )  # fmt: skip
    expected = a @ b
    for thread in range(128):
        for i in range(32):
            assert out[thread, i] == expected[wgmma_d_index(thread, i)], (thread, i)


def test_wgmma_with_the_wrong_swizzle_mode_reads_other_elements(lib: HostLibrary) -> None:
    rng = np.random.default_rng(9)
    a, b = small_ints(rng, (64, 64)), small_ints(rng, (64, 64))
    image = k_major_image(a, "128B") + k_major_image(b.T, "128B")
    out = run_wgmma(
        lib, "wgmma_kb", image, b_offset=8192,
        a_desc=(16, 1024, "64B"), b_desc=(16, 1024, "128B"), steps=(32, 32),
    )  # fmt: skip
    got = np.array([[out[t, i] for i in range(32)] for t in range(128)])
    want = np.array([[(a @ b)[wgmma_d_index(t, i)] for i in range(32)] for t in range(128)])
    assert not np.array_equal(got, want)


def test_wgmma_without_a_fence_is_reported(lib: HostLibrary) -> None:
    image = bytes(16384)
    with pytest.raises(EmulatorError, match=r"wgmma.mma_async at line \d+ without a wgmma.fence"):
        run_wgmma(
            lib, "wgmma_kb", image, b_offset=8192,
            a_desc=(16, 1024, "128B"), b_desc=(16, 1024, "128B"), steps=(32, 32), skip_fence=True,
        )  # fmt: skip


def test_wgmma_needs_a_full_warpgroup(lib: HostLibrary) -> None:
    buf = np.zeros(16384, dtype=np.uint8)
    out = np.zeros((128, 32), dtype=np.float32)
    params = MmaParams(array_pointer(buf), buf.size, 8192, 16, 1024, 16, 1024, 1, 1, 32, 32, 4, 0,
                       array_pointer(out))  # fmt: skip
    with pytest.raises(EmulatorError, match="needs a full warpgroup of 128 threads"):
        lib.kernel("wgmma_kb").launch(params, grid=(1,), block=(96,), smem_bytes=buf.size)


def run_tma(
    lib: HostLibrary, tensor: np.ndarray, tmap: TensorMap2D, x: int, y: int, **flags: int
) -> np.ndarray:
    out = np.zeros(tmap.box_bytes, dtype=np.uint8)
    params = TmaParams(tmap.host_bytes(), x, y, tmap.box_bytes, flags.get("skip_expect_tx", 0),
                       array_pointer(out))  # fmt: skip
    for schedule in SCHEDULES:
        lib.kernel("tma_box").launch(
            params,
            grid=(1,),
            block=(64,),
            smem_bytes=tmap.box_bytes + 8,
            schedule=schedule,
            regions=[(array_pointer(tensor), tensor.nbytes)],
        )
    return out


@pytest.mark.parametrize("mode", ["none", "32B", "64B", "128B"])
def test_tma_box_is_swizzled_and_zero_filled_outside_the_tensor(
    lib: HostLibrary, mode: str
) -> None:
    rows, cols, padded = 37, 70, 72  # rows padded to 144 bytes (a multiple of 16)
    storage = np.arange(rows * padded, dtype=np.uint16).reshape(rows, padded) + 1
    box_inner = {"none": 32, "32B": 16, "64B": 32, "128B": 64}[mode]
    box_outer = 8
    tmap = TensorMap2D(
        address=array_pointer(storage), elem_bytes=2, inner=cols, outer=rows,
        outer_stride_bytes=padded * 2, box_inner=box_inner, box_outer=box_outer, swizzle=mode,
    )  # fmt: skip
    x, y = cols - box_inner // 2, rows - 3  # hangs over both ends
    raw = run_tma(lib, storage, tmap, x, y).view(np.uint16)
    row_bytes = box_inner * 2
    for r in range(box_outer):
        for c in range(box_inner):
            address = r * row_bytes + 2 * c
            address = swizzle(address, mode) if mode != "none" else address
            inside = y + r < rows and x + c < cols
            want = storage[y + r, x + c] if inside else 0
            assert raw[address // 2] == want, (r, c)


def test_tma_without_expect_tx_is_reported(lib: HostLibrary) -> None:
    storage = np.ones((8, 64), dtype=np.uint16)
    tmap = TensorMap2D(
        address=array_pointer(storage), elem_bytes=2, inner=64, outer=8, outer_stride_bytes=128,
        box_inner=64, box_outer=8, swizzle="128B",
    )  # fmt: skip
    with pytest.raises(EmulatorError, match="missing mbarrier_arrive_expect_tx"):
        run_tma(lib, storage, tmap, 0, 0, skip_expect_tx=1)


def test_tensor_map_rejects_what_the_driver_rejects() -> None:
    with pytest.raises(ValueError, match="outer_stride_bytes=140: must be a multiple of 16"):
        TensorMap2D(address=0, elem_bytes=2, inner=70, outer=4, outer_stride_bytes=140,
                    box_inner=64, box_outer=4)  # fmt: skip
    with pytest.raises(ValueError, match="a swizzled box row is exactly 128 bytes"):
        TensorMap2D(address=0, elem_bytes=2, inner=64, outer=4, outer_stride_bytes=128,
                    box_inner=32, box_outer=4, swizzle="128B")  # fmt: skip


def test_mbarrier_phase_parity_orders_a_producer_before_its_consumers(lib: HostLibrary) -> None:
    for schedule in SCHEDULES:  # warp 0 first (it must block) and warp 1 first
        out = np.zeros(33, dtype=np.int32)
        params = ParityParams(0, array_pointer(out))
        lib.kernel("parity").launch(
            params, grid=(1,), block=(64,), smem_bytes=16, schedule=schedule
        )
        assert (out[:32] == 7).all(), (str(schedule), out)  # written before the 32 arrivals
        assert out[32] == 1  # a fresh barrier: the phase with parity 1 counts as complete


def test_a_phase_nobody_completes_is_reported_as_a_deadlock(lib: HostLibrary) -> None:
    out = np.zeros(32, dtype=np.int32)
    with pytest.raises(
        EmulatorError, match=r"deadlock: thread 0 waits at line \d+ for an mbarrier"
    ):
        lib.kernel("parity").launch(
            ParityParams(1, array_pointer(out)), grid=(1,), block=(64,), smem_bytes=16
        )


def test_a_warpgroup_that_diverges_at_a_wgmma_operation_is_reported(lib: HostLibrary) -> None:
    with pytest.raises(EmulatorError, match=r"warpgroup 0 diverged: thread \d+ is at wgmma"):
        lib.kernel("diverge").launch(DivergeParams(0), grid=(1,), block=(128,), smem_bytes=0)
