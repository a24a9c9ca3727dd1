"""The host emulator's execution model: built-ins, barriers, deadlock and divergence reports,
cp.async timing, shared-memory poisoning, launch limits and the host-build cache."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from generator import host_build
from generator.host_build import HostLibrary, array_pointer, build_host_library
from tessera_core.errors import CompileError, EmulatorError, LaunchError

SOURCE = r"""
#include "tessera/intrinsics.cuh"

struct Out { int* ids; float* f; };

// Every thread writes (threadIdx, blockIdx, blockDim, gridDim) at its global linear index.
TESSERA_KERNEL(builtins, Out, 64) {
  const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  int* row = p.ids + 12 * (b * blockDim.x * blockDim.y * blockDim.z + t);
  const unsigned v[12] = {threadIdx.x, threadIdx.y, threadIdx.z, blockIdx.x, blockIdx.y,
                          blockIdx.z, blockDim.x, blockDim.y, blockDim.z, gridDim.x, gridDim.y,
                          gridDim.z};
  for (int i = 0; i < 12; ++i) row[i] = int(v[i]);
}
TESSERA_EXPORT(builtins, Out)

// Thread t writes shared slot t, then (after the barrier) reads its neighbour's slot.
TESSERA_KERNEL(neighbour, Out, 256) {
  int* s = reinterpret_cast<int*>(tessera::dynamic_smem());
  const int n = blockDim.x;
  s[threadIdx.x] = int(threadIdx.x) * 10 + int(blockIdx.x);
  __syncthreads();
  p.ids[blockIdx.x * n + threadIdx.x] = s[(threadIdx.x + 1) % n];
}
TESSERA_EXPORT(neighbour, Out)

// In block 1 thread 5 returns before the barrier that everyone else waits at.
TESSERA_KERNEL(early_exit, Out, 64) {
  if (blockIdx.x == 1 && threadIdx.x == 5) return;
  __syncthreads();
  p.ids[threadIdx.x] = 1;
}
TESSERA_EXPORT(early_exit, Out)

// Even and odd threads wait at two different barriers.
TESSERA_KERNEL(split_barrier, Out, 64) {
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}
TESSERA_EXPORT(split_barrier, Out)

// Lane 3 of warp 1 leaves before a warp shuffle.
TESSERA_KERNEL(shfl_exit, Out, 64) {
  if (threadIdx.x == 35) return;
  p.f[threadIdx.x] = tessera::shfl_xor(1.0f, 1);
}
TESSERA_EXPORT(shfl_exit, Out)

// Lanes of warp 0 reach two different shuffle instructions.
TESSERA_KERNEL(shfl_diverge, Out, 32) {
  float x;
  if (threadIdx.x < 16) {
    x = tessera::shfl_xor(1.0f, 1);
  } else {
    x = tessera::shfl_xor(2.0f, 1);
  }
  p.f[threadIdx.x] = x;
}
TESSERA_EXPORT(shfl_diverge, Out)

// Reads every shared float before writing any: must see the poison pattern in every block.
TESSERA_KERNEL(read_fresh_smem, Out, 32) {
  float* s = reinterpret_cast<float*>(tessera::dynamic_smem());
  p.f[blockIdx.x * 32 + threadIdx.x] = s[threadIdx.x];
  s[threadIdx.x] = 1.0f;
}
TESSERA_EXPORT(read_fresh_smem, Out)

// Thread 7 of block 2 dereferences a wild pointer; with deep != 0 every thread recurses forever.
static int recurse(int n) {
  volatile char pad[4096];
  pad[0] = char(n);
  return recurse(n + 1) + pad[0];
}
TESSERA_KERNEL(bad_memory, Out, 32) {
  if (p.f != nullptr) p.ids[0] = recurse(0);
  if (blockIdx.x == 2 && threadIdx.x == 7) p.ids[0] = *reinterpret_cast<volatile int*>(64);
}
TESSERA_EXPORT(bad_memory, Out)

// One thread, two cp.async groups: A copies src[0..15] with 6 source bytes, B src[16..31].
// Snapshots of the shared bytes after issue, after wait<1> and after wait<0> go to ids.
struct CopyParams { const unsigned char* src; unsigned char* snap; int mode; };
TESSERA_KERNEL(cp_async_order, CopyParams, 32) {
  unsigned char* s = reinterpret_cast<unsigned char*>(tessera::dynamic_smem());
  if (threadIdx.x != 0) return;
  if (p.mode == 1) tessera::cp_async_16(s + 8, p.src, 16);  // misaligned destination
  if (p.mode == 2) tessera::cp_async_16(s + 64, p.src, 16);  // past the shared allocation
  if (p.mode == 3) tessera::cp_async_16(s, p.src + 4, 16);  // misaligned global source
  if (p.mode == 4) tessera::cp_async_16(s, p.src + 32, 1);  // one byte past the source tensor
  tessera::cp_async_16(s, p.src, 6);
  tessera::cp_async_commit();
  tessera::cp_async_16(s + 16, p.src + 16, 16);
  tessera::cp_async_commit();
  for (int i = 0; i < 32; ++i) p.snap[i] = s[i];
  tessera::cp_async_wait<1>();
  for (int i = 0; i < 32; ++i) p.snap[32 + i] = s[i];
  tessera::cp_async_wait<0>();
  for (int i = 0; i < 32; ++i) p.snap[64 + i] = s[i];
}
TESSERA_EXPORT(cp_async_order, CopyParams)
"""


class Out(ctypes.Structure):
    _fields_ = [("ids", ctypes.c_void_p), ("f", ctypes.c_void_p)]


class CopyParams(ctypes.Structure):
    _fields_ = [("src", ctypes.c_void_p), ("snap", ctypes.c_void_p), ("mode", ctypes.c_int)]


@pytest.fixture(scope="module")
def lib() -> HostLibrary:
    return build_host_library(SOURCE)


def _out(ids: np.ndarray | None = None, f: np.ndarray | None = None) -> Out:
    return Out(
        array_pointer(ids) if ids is not None else None,
        array_pointer(f) if f is not None else None,
    )


def test_builtins_follow_cuda_numbering_in_three_dimensions(lib: HostLibrary) -> None:
    grid, block = (3, 2, 2), (4, 2, 3)
    threads, blocks = int(np.prod(block)), int(np.prod(grid))
    ids = np.full((blocks * threads, 12), -1, dtype=np.int32)
    lib.kernel("builtins").launch(_out(ids), grid=grid, block=block, smem_bytes=0)
    row = 0
    for bz in range(grid[2]):
        for by in range(grid[1]):
            for bx in range(grid[0]):
                for tz in range(block[2]):
                    for ty in range(block[1]):
                        for tx in range(block[0]):
                            want = [tx, ty, tz, bx, by, bz, *block, *grid]
                            assert ids[row].tolist() == want, row
                            row += 1


def test_barrier_orders_shared_memory_between_threads(lib: HostLibrary) -> None:
    n, blocks = 256, 3
    ids = np.full(blocks * n, -1, dtype=np.int32)
    lib.kernel("neighbour").launch(_out(ids), grid=(blocks,), block=(n,), smem_bytes=4 * n)
    t = np.arange(n)
    for b in range(blocks):
        assert np.array_equal(ids[b * n : (b + 1) * n], ((t + 1) % n) * 10 + b)


def test_a_thread_that_skips_a_barrier_is_reported_not_hung(lib: HostLibrary) -> None:
    ids = np.zeros(64, dtype=np.int32)
    with pytest.raises(EmulatorError) as info:
        lib.kernel("early_exit").launch(_out(ids), grid=(2,), block=(64,), smem_bytes=0)
    message = str(info.value)
    assert "kernel early_exit block (1,0,0)" in message
    assert "__syncthreads() at line" in message
    assert "thread 5 (it exited)" in message and "63 of 64 threads arrived" in message


def test_threads_at_different_barriers_are_reported(lib: HostLibrary) -> None:
    with pytest.raises(EmulatorError, match=r"split_barrier block \(0,0,0\).*different __sync"):
        lib.kernel("split_barrier").launch(_out(), grid=(1,), block=(64,), smem_bytes=0)


def test_a_lane_missing_from_a_warp_collective_is_reported(lib: HostLibrary) -> None:
    f = np.zeros(64, dtype=np.float32)
    with pytest.raises(EmulatorError, match=r"warp 1 never completes shfl\.xor .*lane 3 exited"):
        lib.kernel("shfl_exit").launch(_out(f=f), grid=(1,), block=(64,), smem_bytes=0)


def test_lanes_at_different_collectives_are_reported(lib: HostLibrary) -> None:
    f = np.zeros(32, dtype=np.float32)
    with pytest.raises(EmulatorError, match=r"warp 0 diverged: lane 0 is at shfl\.xor \(line"):
        lib.kernel("shfl_diverge").launch(_out(f=f), grid=(1,), block=(32,), smem_bytes=0)


def test_dynamic_shared_memory_is_poisoned_at_every_block_start(lib: HostLibrary) -> None:
    f = np.zeros(3 * 32, dtype=np.float32)
    lib.kernel("read_fresh_smem").launch(_out(f=f), grid=(3,), block=(32,), smem_bytes=128)
    assert np.isnan(f).all()  # block 1 and 2 do not see block 0's writes


def _copy(lib: HostLibrary, mode: int = 0) -> np.ndarray:
    backing = np.arange(1, 49, dtype=np.uint8)  # never zero, so zero-fill is visible
    src = backing[:32]  # the tensor; 16 more readable bytes follow it
    assert src.ctypes.data % 16 == 0
    snap = np.zeros((3, 32), dtype=np.uint8)
    params = CopyParams(array_pointer(src), array_pointer(snap), mode)
    regions = [(array_pointer(src), src.nbytes), (array_pointer(snap), snap.nbytes)]
    lib.kernel("cp_async_order").launch(
        params, grid=(1,), block=(32,), smem_bytes=48, regions=regions
    )
    return snap


def test_cp_async_copies_land_at_the_wait_that_covers_them(lib: HostLibrary) -> None:
    poison = np.full(16, 0xFF, dtype=np.uint8)
    group_a = np.concatenate([np.arange(1, 7, dtype=np.uint8), np.zeros(10, np.uint8)])
    group_b = np.arange(17, 33, dtype=np.uint8)
    issued, after_wait1, after_wait0 = _copy(lib)
    assert np.array_equal(issued, np.concatenate([poison, poison]))  # nothing before a wait
    assert np.array_equal(after_wait1, np.concatenate([group_a, poison]))  # oldest group only
    assert np.array_equal(after_wait0, np.concatenate([group_a, group_b]))


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        (1, "destination .* not a 16-byte aligned"),
        (2, "inside the"),
        (3, "global source .* not 16-byte aligned"),
        (4, "reads 1 bytes at .*, outside every tensor of the launch"),
    ],
)
def test_cp_async_rejects_bad_destinations(lib: HostLibrary, mode: int, reason: str) -> None:
    with pytest.raises(EmulatorError, match=rf"cp_async_order .*cp\.async at line \d+: .*{reason}"):
        _copy(lib, mode)


def test_a_wild_pointer_is_a_launch_error_not_a_crash(lib: HostLibrary) -> None:
    ids = np.zeros(4, dtype=np.int32)
    with pytest.raises(EmulatorError, match=r"bad_memory block \(2,0,0\) thread 7: segmentation"):
        lib.kernel("bad_memory").launch(_out(ids), grid=(3,), block=(32,), smem_bytes=0)
    # The process's own handlers are back: the next launch works.
    test_barrier_orders_shared_memory_between_threads(lib)


def test_a_fiber_stack_overflow_is_named(lib: HostLibrary) -> None:
    ids, f = np.zeros(4, dtype=np.int32), np.zeros(4, dtype=np.float32)
    with pytest.raises(EmulatorError, match=r"thread 0: .*overflowed its fiber stack"):
        lib.kernel("bad_memory").launch(_out(ids, f), grid=(1,), block=(32,), smem_bytes=0)


def test_a_block_larger_than_the_kernel_declares_is_a_launch_error(lib: HostLibrary) -> None:
    with pytest.raises(LaunchError, match="declared for at most 32"):
        lib.kernel("shfl_diverge").launch(_out(), grid=(1,), block=(64,), smem_bytes=0)


def test_host_build_is_cached_by_content(tmp_path: Path) -> None:
    source = (
        '#include "tessera/intrinsics.cuh"\n'
        'extern "C" __attribute__((visibility("default"))) int answer() { return 42; }\n'
    )
    first = build_host_library(source, cache_dir=tmp_path)
    assert not first.cache_hit and first.path.is_file()
    host_build._loaded.pop(first.key)  # forget the loaded library: the file on disk is reused
    second = build_host_library(source, cache_dir=tmp_path)
    assert second.cache_hit and second.path == first.path and second.lib.answer() == 42
    other = build_host_library(source + "// changed\n", cache_dir=tmp_path)
    assert other.key != first.key
    flags = {host_build.host_build_key(source, cxx="g++", flags=(f"-O{o}",)) for o in (0, 2)}
    assert len(flags) == 2


def test_host_build_errors_carry_the_compiler_log(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="host build failed") as info:
        build_host_library('#include "tessera/intrinsics.cuh"\nint broken(', cache_dir=tmp_path)
    assert "error" in info.value.log
