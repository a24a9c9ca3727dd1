// tessera/intrinsics.cuh — the ONE place where PTX instructions and warp-level primitives live.
//
// Every kernel template includes this header and nothing else that is architecture specific.
// Two halves implement the same contract:
//   * device half (below): inline PTX for sm_80+ (mma.sync, ldmatrix, cp.async, shfl).
//   * host half (intrinsics_host.h, selected by TESSERA_HOST_EMULATION): a CPU emulation
//     used by generator's host build so the very same kernel source runs on the CPU.
//
// Contract (both halves provide exactly these, in namespace tessera):
//   types        f16_t, bf16_t, uint32_t               16-bit storage types, b32 registers
//   conversions  to_float<T>(T), from_float<T>(float), pack2<T>(float lo, float hi) -> uint32_t
//                (round to nearest even; lo lands in the low 16 bits)
//   mma          mma_m16n8k16<T>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
//                                const float (&c)[4])      d = a*b + c, row.col, f32 accumulate
//   ldmatrix     ldmatrix_x1/x2/x4[_trans](uint32_t regs..., const void* smem_row_addr)
//   cp.async     cp_async_16(void* smem, const void* gmem, int src_bytes)  zero-fills 16-src_bytes
//                cp_async_commit(), cp_async_wait<N>()
//   shuffles     shfl_xor(float v, int lane_mask)          full-warp butterfly
//   math         fast_exp2(float)                          ex2.approx on device
//   atomics      atomic_add_f32(float* gmem, float v)      red.global.add.f32 on device; on the
//                host a plain add (fibers switch only at barriers, blocks run in order, so the
//                emulator's sum order is fixed and its result reproducible)
//   memory       dynamic_smem() -> char*                   this block's dynamic shared memory
//   kernels      TESSERA_KERNEL(name, Params, threads)     declares an extern "C" entry point
//                TESSERA_EXPORT(name, Params)              after the body; host half emits a launcher
// plus the CUDA built-ins threadIdx, blockIdx, blockDim, gridDim and __syncthreads().
#pragma once

#if defined(TESSERA_HOST_EMULATION)
#include "intrinsics_host.h"
#else

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define TS_DEVICE __device__ __forceinline__
// Min 1 block per SM: without it ptxas may cap registers at 128 for 128-thread blocks and spill
// the attention accumulators; occupancy is chosen by the tile configuration instead.
#define TESSERA_KERNEL(name, Params, threads) \
  extern "C" __global__ void __launch_bounds__(threads, 1) name(const Params p)
#define TESSERA_EXPORT(name, Params)

namespace tessera {

using uint32_t = unsigned int;  // NVRTC ships no <stdint.h>
using f16_t = __half;
using bf16_t = __nv_bfloat16;

template <typename T> TS_DEVICE float to_float(T x);
template <> TS_DEVICE float to_float<f16_t>(f16_t x) { return __half2float(x); }
template <> TS_DEVICE float to_float<bf16_t>(bf16_t x) { return __bfloat162float(x); }

template <typename T> TS_DEVICE T from_float(float x);
template <> TS_DEVICE f16_t from_float<f16_t>(float x) { return __float2half_rn(x); }
template <> TS_DEVICE bf16_t from_float<bf16_t>(float x) { return __float2bfloat16_rn(x); }

template <typename T> TS_DEVICE uint32_t pack2(float lo, float hi);
template <> TS_DEVICE uint32_t pack2<f16_t>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);  // .x = lo (low 16 bits), .y = hi
  return *reinterpret_cast<uint32_t*>(&h);
}
template <> TS_DEVICE uint32_t pack2<bf16_t>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

template <typename T>
TS_DEVICE void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                            const float (&c)[4]);
template <>
TS_DEVICE void mma_m16n8k16<f16_t>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                   const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
        "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
template <>
TS_DEVICE void mma_m16n8k16<bf16_t>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                    const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
        "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

TS_DEVICE uint32_t smem_addr(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

TS_DEVICE void ldmatrix_x1(uint32_t& r0, const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
               : "=r"(r0) : "r"(smem_addr(row)));
}
TS_DEVICE void ldmatrix_x2(uint32_t& r0, uint32_t& r1, const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1) : "r"(smem_addr(row)));
}
TS_DEVICE void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                           const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_addr(row)));
}
TS_DEVICE void ldmatrix_x1_trans(uint32_t& r0, const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
               : "=r"(r0) : "r"(smem_addr(row)));
}
TS_DEVICE void ldmatrix_x2_trans(uint32_t& r0, uint32_t& r1, const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1) : "r"(smem_addr(row)));
}
TS_DEVICE void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                 const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_addr(row)));
}

// 16-byte global->shared copy that bypasses L1; bytes past src_bytes (0..16) are zero-filled,
// which is how tiles hanging over the end of a tensor are padded.
TS_DEVICE void cp_async_16(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
               :: "r"(smem_addr(smem)), "l"(gmem), "r"(src_bytes));
}
TS_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> TS_DEVICE void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" :: "n"(N));
}

constexpr unsigned FULL_WARP_MASK = 0xffffffffu;
TS_DEVICE float shfl_xor(float v, int lane_mask) {
  return __shfl_xor_sync(FULL_WARP_MASK, v, lane_mask);
}

TS_DEVICE float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

TS_DEVICE void atomic_add_f32(float* gmem, float v) { atomicAdd(gmem, v); }

TS_DEVICE char* dynamic_smem() {
  extern __shared__ __align__(128) char tessera_dynamic_smem[];
  return tessera_dynamic_smem;
}

}  // namespace tessera

#endif  // TESSERA_HOST_EMULATION
