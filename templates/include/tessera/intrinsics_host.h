// tessera/intrinsics_host.h — host half of the intrinsics contract: runs a kernel source on the CPU.
//
// Selected by intrinsics.cuh when TESSERA_HOST_EMULATION is defined (generator/host_build.py).
// The same kernel source that NVRTC compiles is compiled here by g++ (C++20) into a shared library.
//
// Files: host/half.h (f16/bf16, RNE), host/fragments.h (the PTX fragment layouts, in one place),
// host/state.h (fibers, warp slots, the launch, the fiber switch), host/sync.h (barriers and warp
// collectives), host/async_copy.h (cp.async groups), host/scheduler.h (running a grid),
// host/fault.h (memory faults become launch errors), host/atomic_audit.h (atomic adds counted
// per accumulator element), host/hopper.h (the sm_90a block: wgmma, TMA,
// mbarrier; included at the end). This file maps the contract and the CUDA built-ins onto them.
//
// Execution model
//   * Every CUDA thread of a block is a cooperative fiber with its own stack (FIBER_STACK_BYTES).
//     Fibers switch only at __syncthreads() and at warp collectives (mma, ldmatrix, shuffles);
//     everything between two such points runs uninterrupted, so the emulation is deterministic.
//   * The default schedule resumes the lowest-numbered runnable thread: warp 0 runs as far as it
//     can before warp 1 starts, so a warp reads tiles other warps have not loaded yet when a
//     barrier is missing. cp.async copies happen as late as the PTX rules allow, at the
//     cp_async_wait<N>() that covers them, so a tile read before its wait holds poison.
//   * Launch modes (host::MODE_*) flip both: eager copies (performed at issue) and the last warp
//     first, which expose a stage refilled before every warp has read it. The Python side runs
//     both schedules and requires identical results.
//   * Blocks run one after another on the calling OS thread; a launch holds a mutex.
//   * Warp collectives: each lane deposits its operands and waits; the 32nd lane to arrive checks
//     that all lanes reached the same instruction (kind and source line), computes, and releases.
//   * A barrier or collective that can never complete (a thread exited, or waits elsewhere) is
//     reported as an error naming kernel, block, the barrier's line and the missing thread.
//   * Dynamic shared memory is one buffer per block, filled with 0xFF bytes (NaN in f16, bf16 and
//     f32) at block start, so reading a tile that was never written poisons the result. Static
//     __shared__ variables become function statics (one copy, fine as blocks run in turn), but
//     ldmatrix and cp.async accept dynamic shared memory only, as the templates use.
//   * Faults (misaligned or out-of-range ldmatrix/cp.async addresses, divergence, deadlock, a
//     segmentation fault or fiber stack overflow) abort the launch: the exported launcher
//     returns non-zero and fills an error message buffer.
#pragma once

#include "host/async_copy.h"
#include "host/atomic_audit.h"
#include "host/half.h"
#include "host/scheduler.h"
#include "host/state.h"
#include "host/sync.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static

static constexpr int warpSize = 32;

// The C math functions kernels may call, declared rather than included: <math.h> pulls <cmath>
// into C++ and doubles the host build's compile time.
extern "C" {
float expf(float) noexcept;
float exp2f(float) noexcept;
float logf(float) noexcept;
float log2f(float) noexcept;
float sqrtf(float) noexcept;
float fabsf(float) noexcept;
float tanhf(float) noexcept;
float fmaxf(float, float) noexcept;
float fminf(float, float) noexcept;
float floorf(float) noexcept;
float ceilf(float) noexcept;
}
#ifndef INFINITY
#define INFINITY (__builtin_inff())
#endif

namespace tessera {

// ---------------------------------------------------------------- the contract (host half)
using uint32_t = ::uint32_t;
using f16_t = host::f16;
using bf16_t = host::bf16;

template <typename T> inline float to_float(T x) { return x.to_float(); }
template <typename T> inline T from_float(float x) { return T::from_float(x); }
template <typename T> inline uint32_t pack2(float lo, float hi) {
  return static_cast<uint32_t>(T::from_float(lo).bits) |
         (static_cast<uint32_t>(T::from_float(hi).bits) << 16);
}

template <typename T>
inline void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                         const float (&c)[4], int line = __builtin_LINE()) {
  int lane = 0;
  host::WarpSlot& w = host::my_slot(&lane);
  memcpy(w.a[lane], a, sizeof a);
  memcpy(w.b[lane], b, sizeof b);
  memcpy(w.c[lane], c, sizeof c);
  constexpr host::Collective kind =
      __is_same(T, bf16_t) ? host::Collective::MmaBf16 : host::Collective::MmaF16;
  static_assert(__is_same(T, bf16_t) || __is_same(T, f16_t),
                "mma_m16n8k16 takes f16_t or bf16_t");
  host::arrive(kind, line, 0);
  memcpy(d, w.out_f32[lane], sizeof d);
}

namespace host {
inline void ldmatrix(uint32_t* regs, int matrices, bool trans, const void* row, int line) {
  int lane = 0;
  WarpSlot& w = my_slot(&lane);
  w.addr[lane] = static_cast<const char*>(row);
  arrive(trans ? Collective::LdmatrixTrans : Collective::Ldmatrix, line, matrices);
  for (int j = 0; j < matrices; ++j) regs[j] = w.out_regs[lane][j];
}
}  // namespace host

inline void ldmatrix_x1(uint32_t& r0, const void* row, int line = __builtin_LINE()) {
  uint32_t r[1];
  host::ldmatrix(r, 1, false, row, line);
  r0 = r[0];
}
inline void ldmatrix_x2(uint32_t& r0, uint32_t& r1, const void* row,
                        int line = __builtin_LINE()) {
  uint32_t r[2];
  host::ldmatrix(r, 2, false, row, line);
  r0 = r[0];
  r1 = r[1];
}
inline void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, const void* row,
                        int line = __builtin_LINE()) {
  uint32_t r[4];
  host::ldmatrix(r, 4, false, row, line);
  r0 = r[0];
  r1 = r[1];
  r2 = r[2];
  r3 = r[3];
}
inline void ldmatrix_x1_trans(uint32_t& r0, const void* row, int line = __builtin_LINE()) {
  uint32_t r[1];
  host::ldmatrix(r, 1, true, row, line);
  r0 = r[0];
}
inline void ldmatrix_x2_trans(uint32_t& r0, uint32_t& r1, const void* row,
                              int line = __builtin_LINE()) {
  uint32_t r[2];
  host::ldmatrix(r, 2, true, row, line);
  r0 = r[0];
  r1 = r[1];
}
inline void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                              const void* row, int line = __builtin_LINE()) {
  uint32_t r[4];
  host::ldmatrix(r, 4, true, row, line);
  r0 = r[0];
  r1 = r[1];
  r2 = r[2];
  r3 = r[3];
}

inline void cp_async_16(void* smem, const void* gmem, int src_bytes,
                        int line = __builtin_LINE()) {
  host::cp_async_16(smem, gmem, src_bytes, line);
}
inline void cp_async_commit() { host::cp_async_commit(); }
template <int N> inline void cp_async_wait() {
  static_assert(N >= 0, "cp_async_wait<N> needs N >= 0");
  host::cp_async_wait(N);
}

constexpr unsigned FULL_WARP_MASK = 0xffffffffu;
inline float shfl_xor(float v, int lane_mask, int line = __builtin_LINE()) {
  int lane = 0;
  host::WarpSlot& w = host::my_slot(&lane);
  w.value[lane] = v;
  host::arrive(host::Collective::Shfl, line, lane_mask);
  return w.out_f32[lane][0];
}

inline float fast_exp2(float x) { return exp2f(x); }

// Blocks run one after another and a block's fibers switch only at barriers and collectives:
// a plain read-modify-write is atomic here, and the order of the adds is the same every run.
// Both are counted per element of an audited accumulator (host/atomic_audit.h).
inline void atomic_add_f32(float* gmem, float v) {
  *gmem += v;
  host::count_atomic_add(gmem);
}
inline int atomic_add_i32(int* gmem, int v) {
  const int old = *gmem;
  *gmem = old + v;
  host::count_atomic_add(gmem);
  return old;
}
// Blocks run in order on one OS thread: every earlier write is already visible.
inline void thread_fence() {}
inline float load_cg_f32(const float* gmem) { return *gmem; }

inline char* dynamic_smem() { return host::active()->smem; }

inline int thread_index() { return static_cast<int>(threadIdx.x); }

}  // namespace tessera

// CUDA math and built-in functions the templates may use, with their host meaning.
inline void tessera_syncthreads(int line = __builtin_LINE()) { tessera::host::sync_threads(line); }
#define __syncthreads() tessera_syncthreads(__LINE__)
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  return tessera::shfl_xor(v, lane_mask);
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }

// TESSERA_KERNEL declares the body; TESSERA_EXPORT (after it) emits the C launcher that Python calls:
//   int tessera_launch_<name>(const Params*, const unsigned grid[3], const unsigned block[3],
//                             size_t smem_bytes, int mode, const uint64_t* regions,
//                             int num_regions, char* err, int err_len)
//   returns 0 on success; `mode` is a set of host::MODE_* flags (0: the default schedule);
//   `regions` holds num_regions [begin, end) address pairs that cp.async may read (0: any).
#define TESSERA_KERNEL(name, Params, threads)                  \
  static constexpr int tessera_max_threads_##name = (threads); \
  static void name(const Params p)
#define TESSERA_EXPORT(name, Params)                                                        \
  extern "C" __attribute__((visibility("default"))) int tessera_launch_##name(              \
      const Params* params, const unsigned* grid, const unsigned* block, size_t smem_bytes, \
      int mode, const uint64_t* regions, int num_regions, char* err, int err_len) {         \
    return ::tessera::host::launch(                                                         \
        #name, tessera_max_threads_##name,                                                  \
        [](const void* raw) { name(*static_cast<const Params*>(raw)); }, params, grid,      \
        block, smem_bytes, mode, regions, num_regions, err, err_len);                       \
  }

#include "host/hopper.h"
