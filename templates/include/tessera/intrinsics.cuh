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
//                atomic_add_i32(int* gmem, int v) -> int   atomicAdd, returns the old value (the
//                split-KV decode's "last block of a group combines" counter)
//   fences       thread_fence()                           __threadfence: this thread's global
//                writes are seen device-wide before its later writes (a no-op on the host)
//   loads        load_cg_f32(const float* gmem)           ld.global.cg (L2, not a stale L1 line):
//                reads another block's results after a fence
//   memory       dynamic_smem() -> char*                   this block's dynamic shared memory
//   indices      thread_index() -> int                     threadIdx.x, read afresh at each call
//                (volatile: the compiler neither caches nor hoists it, so values derived from it
//                need not stay live in registers across a loop)
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

TS_DEVICE int thread_index() {
  unsigned tid;
  asm volatile("mov.u32 %0, %%tid.x;" : "=r"(tid));
  return static_cast<int>(tid);
}

TS_DEVICE void atomic_add_f32(float* gmem, float v) { atomicAdd(gmem, v); }
TS_DEVICE int atomic_add_i32(int* gmem, int v) { return atomicAdd(gmem, v); }
TS_DEVICE void thread_fence() { __threadfence(); }
TS_DEVICE float load_cg_f32(const float* gmem) { return __ldcg(gmem); }

TS_DEVICE char* dynamic_smem() {
  extern __shared__ __align__(128) char tessera_dynamic_smem[];
  return tessera_dynamic_smem;
}

}  // namespace tessera

// ================================================================ Hopper (sm_90a), device half
// wgmma, TMA, mbarrier, setmaxnreg: compiled only for sm_90a (NVRTC defines
// __CUDA_ARCH_FEAT_SM90_ALL for --gpu-architecture=sm_90a), so sm_80-sm_89 builds never see it.
// Layout arithmetic (descriptors, swizzles) lives in sm90_layout.h, shared with the host half.
//   kernels      TESSERA_KERNEL_SM90(name, Params, threads)  Params is __grid_constant__, so the
//                tensor maps inside it have the parameter-space address TMA needs
//   tensor maps  tensor_map_t                                 CUtensorMap's 128 opaque bytes
//   wgmma        wgmma_m64k16<T, N, TRANS_B>(float (&d)[N/2], desc_a, desc_b, accumulate)
//                A K-major from shared memory; B K-major (TRANS_B 0) or N-major (1); N 64/128/192/256
//                wgmma_m64k32_e4m3<N>(float (&d)[N/2], desc_a, desc_b, accumulate)   FP8 e4m3,
//                A and B K-major, 32 bytes of k
//                wgmma_fence(), wgmma_commit_group(), wgmma_wait_group<N>()
//                wgmma_descriptor(smem, lbo_bytes, sbo_bytes, swizzle)
//   mbarrier     mbarrier_init(bar, count), mbarrier_arrive(bar), mbarrier_arrive_expect_tx(bar,
//                bytes), mbarrier_try_wait_parity(bar, parity) -> bool, mbarrier_wait_parity
//   TMA          tma_load_2d(smem_dst, map, bar, x_inner, y_outer)   completes bytes on `bar`
//   fences       fence_proxy_async()   generic-proxy shared writes -> visible to TMA/wgmma
//   registers    setmaxnreg_inc<N>(), setmaxnreg_dec<N>()
//   alignment    align_smem_1024(char*)  rounds up to a 1024-byte shared address (128B swizzle)
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(TESSERA_SM90A)
#include "sm90_layout.h"

#define TESSERA_KERNEL_SM90(name, Params, threads) \
  extern "C" __global__ void __launch_bounds__(threads, 1) name(const __grid_constant__ Params p)

namespace tessera {

using uint64_t = unsigned long long;

struct alignas(64) tensor_map_t {
  uint64_t opaque[16];
};

TS_DEVICE char* align_smem_1024(char* ptr) {
  const uint32_t addr = smem_addr(ptr);
  return ptr + (((addr + 1023u) & ~1023u) - addr);
}

TS_DEVICE uint64_t wgmma_descriptor(const void* smem, uint32_t lbo_bytes, uint32_t sbo_bytes,
                                    int swizzle) {
  return make_wgmma_descriptor(smem_addr(smem), lbo_bytes, sbo_bytes, swizzle);
}

TS_DEVICE void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
TS_DEVICE void wgmma_commit_group() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N> TS_DEVICE void wgmma_wait_group() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Generated operand lists (one "+f" per accumulator register): D = A*B (+ D when accumulate).
#define TESSERA_WGMMA_M64N64K16(TYPE)                                                       \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                          \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " {"                      \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,"              \
      "%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"                                     \
      "}, %32, %33, p, 1, 1, 0, %35;\n}\n"                                                  \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), \
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),          \
        "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),       \
        "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),       \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),       \
        "+f"(d[31])                                                                         \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TRANS_B))

#define TESSERA_WGMMA_M64N128K16(TYPE)                                                      \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                          \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " {"                     \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,"              \
      "%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,"                \
      "%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,"                \
      "%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"                                             \
      "}, %64, %65, p, 1, 1, 0, %67;\n}\n"                                                  \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), \
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),          \
        "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),       \
        "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),       \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),       \
        "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),       \
        "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),       \
        "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),       \
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),       \
        "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]),       \
        "+f"(d[61]), "+f"(d[62]), "+f"(d[63])                                               \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TRANS_B))

#define TESSERA_WGMMA_M64N192K16(TYPE)                                                      \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"                                          \
      "wgmma.mma_async.sync.aligned.m64n192k16.f32." TYPE "." TYPE " {"                     \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,"              \
      "%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,"                \
      "%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,"                \
      "%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,"                \
      "%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,"                \
      "%88,%89,%90,%91,%92,%93,%94,%95"                                                     \
      "}, %96, %97, p, 1, 1, 0, %99;\n}\n"                                                  \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), \
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),          \
        "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),       \
        "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),       \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),       \
        "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),       \
        "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),       \
        "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),       \
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),       \
        "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]),       \
        "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]),       \
        "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]),       \
        "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]),       \
        "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]),       \
        "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]),       \
        "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])                     \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TRANS_B))

#define TESSERA_WGMMA_M64N256K16(TYPE)                                                      \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"                                         \
      "wgmma.mma_async.sync.aligned.m64n256k16.f32." TYPE "." TYPE " {"                     \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,"              \
      "%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,"                \
      "%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,"                \
      "%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,"                \
      "%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,"                \
      "%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,"                \
      "%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,"              \
      "%118,%119,%120,%121,%122,%123,%124,%125,%126,%127"                                   \
      "}, %128, %129, p, 1, 1, 0, %131;\n}\n"                                               \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), \
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),          \
        "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),       \
        "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),       \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),       \
        "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),       \
        "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),       \
        "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),       \
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),       \
        "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]),       \
        "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]),       \
        "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]),       \
        "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]),       \
        "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]),       \
        "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]),       \
        "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]),       \
        "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]),    \
        "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), \
        "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), \
        "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), \
        "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), \
        "+f"(d[127])                                                                        \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TRANS_B))

template <typename T> struct wgmma_dtype;  // f16_t and bf16_t only
template <> struct wgmma_dtype<f16_t> { static constexpr bool is_f16 = true; };
template <> struct wgmma_dtype<bf16_t> { static constexpr bool is_f16 = false; };

template <typename T, int N, int TRANS_B>
TS_DEVICE void wgmma_m64k16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b,
                            bool accumulate) {
  static_assert(N == 64 || N == 128 || N == 192 || N == 256,
                "wgmma_m64k16: N is 64, 128, 192 or 256");
  const uint32_t scale_d = accumulate ? 1u : 0u;
  if constexpr (wgmma_dtype<T>::is_f16) {
    if constexpr (N == 64) TESSERA_WGMMA_M64N64K16("f16");
    if constexpr (N == 128) TESSERA_WGMMA_M64N128K16("f16");
    if constexpr (N == 192) TESSERA_WGMMA_M64N192K16("f16");
    if constexpr (N == 256) TESSERA_WGMMA_M64N256K16("f16");
  } else {
    if constexpr (N == 64) TESSERA_WGMMA_M64N64K16("bf16");
    if constexpr (N == 128) TESSERA_WGMMA_M64N128K16("bf16");
    if constexpr (N == 192) TESSERA_WGMMA_M64N192K16("bf16");
    if constexpr (N == 256) TESSERA_WGMMA_M64N256K16("bf16");
  }
}

// FP8 (e4m3) wgmma, m64nNk32: A and B K-major only (the ISA has no imm-trans for 8-bit types),
// 32 bytes of k per instruction; SASS QGMMA. Added beside the 16-bit forms (issue 10, FP8 gemm).
#define TESSERA_WGMMA_M64N64K32_E4M3()                                                      \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                          \
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 {"                              \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,"                  \
      "%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"                                 \
      "}, %32, %33, p, 1, 1;\n}\n"                                                          \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),             \
        "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),       \
        "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),       \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),       \
        "+f"(d[30]), "+f"(d[31])                                                            \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d))

#define TESSERA_WGMMA_M64N128K32_E4M3()                                                     \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                          \
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {"                             \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,"                  \
      "%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,"                    \
      "%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,"                    \
      "%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"                                 \
      "}, %64, %65, p, 1, 1;\n}\n"                                                          \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),             \
        "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),       \
        "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),       \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),       \
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),       \
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),       \
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),       \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),       \
        "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),       \
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])                                  \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d))

#define TESSERA_WGMMA_M64N192K32_E4M3()                                                     \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"                                          \
      "wgmma.mma_async.sync.aligned.m64n192k32.f32.e4m3.e4m3 {"                             \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,"                  \
      "%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,"                    \
      "%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,"                    \
      "%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,"                    \
      "%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,"                    \
      "%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95"                                 \
      "}, %96, %97, p, 1, 1;\n}\n"                                                          \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),             \
        "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),       \
        "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),       \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),       \
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),       \
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),       \
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),       \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),       \
        "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),       \
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]),       \
        "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),       \
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]),       \
        "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),       \
        "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]),       \
        "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])        \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d))

#define TESSERA_WGMMA_M64N256K32_E4M3()                                                     \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"                                         \
      "wgmma.mma_async.sync.aligned.m64n256k32.f32.e4m3.e4m3 {"                             \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,"                  \
      "%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,"                    \
      "%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,"                    \
      "%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,"                    \
      "%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,"                    \
      "%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,"                    \
      "%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,"                    \
      "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,"                   \
      "%125,%126,%127"                                                                      \
      "}, %128, %129, p, 1, 1;\n}\n"                                                        \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),             \
        "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),       \
        "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),       \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),       \
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),       \
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),       \
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),       \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),       \
        "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),       \
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]),       \
        "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),       \
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]),       \
        "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),       \
        "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]),       \
        "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),       \
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]),     \
        "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]),               \
        "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),               \
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]),               \
        "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]),               \
        "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]),               \
        "+f"(d[127])                                                                        \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d))

template <int N>
TS_DEVICE void wgmma_m64k32_e4m3(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b,
                                 bool accumulate) {
  static_assert(N == 64 || N == 128 || N == 192 || N == 256,
                "wgmma_m64k32_e4m3: N is 64, 128, 192 or 256");
  const uint32_t scale_d = accumulate ? 1u : 0u;
  if constexpr (N == 64) TESSERA_WGMMA_M64N64K32_E4M3();
  if constexpr (N == 128) TESSERA_WGMMA_M64N128K32_E4M3();
  if constexpr (N == 192) TESSERA_WGMMA_M64N192K32_E4M3();
  if constexpr (N == 256) TESSERA_WGMMA_M64N256K32_E4M3();
}

TS_DEVICE void mbarrier_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count)
               : "memory");
}
TS_DEVICE void mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
TS_DEVICE void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t tx_bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)),
               "r"(tx_bytes)
               : "memory");
}
// True once the phase with parity `parity` has completed (the barrier's current phase differs).
TS_DEVICE bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(smem_addr(bar)), "r"(parity)
      : "memory");
  return done != 0;
}
TS_DEVICE void mbarrier_wait_parity(uint64_t* bar, uint32_t parity) {
  while (!mbarrier_try_wait_parity(bar, parity)) {
  }
}

TS_DEVICE void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// 2-D TMA load of one box at (x_inner, y_outer) elements into smem_dst (128-byte aligned;
// 1024 for the 128B swizzle); out-of-bounds elements are zero-filled; completes the box's bytes
// as transactions on `bar`.
TS_DEVICE void tma_load_2d(void* smem_dst, const tensor_map_t* map, uint64_t* bar, int x_inner,
                           int y_outer) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4}], [%2];\n" ::"r"(smem_addr(smem_dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(x_inner), "r"(y_outer)
      : "memory");
}

template <int N> TS_DEVICE void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N> TS_DEVICE void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}

// ---------------------------------------------------------------- attention additions (sm_90a)
//   wgmma (A in registers)  wgmma_m64k16_rs<T, N, TRANS_B>(float (&d)[N/2], const uint32_t (&a)[4],
//                desc_b, accumulate)   A: warp w of the warpgroup holds rows 16w..16w+15 in the
//                mma.m16n8k16 A fragment layout (host/fragments.h); N 64/128/256
//   named barriers  named_barrier_sync(id, threads), named_barrier_arrive(id, threads)
//                bar.sync / bar.arrive on barrier id 1..15 (0 is __syncthreads) for `threads`
//   TMA 3-D      tma_load_3d(smem_dst, map, bar, x_inner, y, z_outer)   as tma_load_2d
//   operands     wgmma_fence_operand(regs)  pins registers an asynchronous wgmma reads or writes:
//                the compiler may not move their uses across it (CUTLASS's
//                warpgroup_fence_operand), e.g. the softmax's reads of S above its wait_group
#define TESSERA_WGMMA_RS_M64N64K16(TYPE)                                                    \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                          \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " {"                      \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,"              \
      "%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"                                     \
      "}, {%32,%33,%34,%35}, %36, p, 1, 1, %38;\n}\n"                                       \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),             \
        "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),       \
        "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),       \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),       \
        "+f"(d[30]), "+f"(d[31])                                                            \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TRANS_B))

#define TESSERA_WGMMA_RS_M64N128K16(TYPE)                                                   \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                          \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " {"                     \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,"              \
      "%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,"                \
      "%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,"                \
      "%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"                                             \
      "}, {%64,%65,%66,%67}, %68, p, 1, 1, %70;\n}\n"                                       \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),             \
        "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),       \
        "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),       \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),       \
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),       \
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),       \
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),       \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),       \
        "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),       \
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])                                  \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TRANS_B))

#define TESSERA_WGMMA_RS_M64N256K16(TYPE)                                                   \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"                                         \
      "wgmma.mma_async.sync.aligned.m64n256k16.f32." TYPE "." TYPE " {"                     \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,"              \
      "%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,"                \
      "%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,"                \
      "%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,"                \
      "%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,"                \
      "%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,"                \
      "%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,"              \
      "%118,%119,%120,%121,%122,%123,%124,%125,%126,%127"                                   \
      "}, {%128,%129,%130,%131}, %132, p, 1, 1, %134;\n}\n"                                 \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),             \
        "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),       \
        "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),       \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),       \
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),       \
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),       \
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),       \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),       \
        "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),       \
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]),       \
        "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),       \
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]),       \
        "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),       \
        "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]),       \
        "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),       \
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]),     \
        "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]),               \
        "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),               \
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]),               \
        "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]),               \
        "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]),               \
        "+f"(d[127])                                                                        \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TRANS_B))

template <typename T, int N, int TRANS_B>
TS_DEVICE void wgmma_m64k16_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,
                               bool accumulate) {
  static_assert(N == 64 || N == 128 || N == 256, "wgmma_m64k16_rs: N is 64, 128 or 256");
  const uint32_t scale_d = accumulate ? 1u : 0u;
  if constexpr (wgmma_dtype<T>::is_f16) {
    if constexpr (N == 64) TESSERA_WGMMA_RS_M64N64K16("f16");
    if constexpr (N == 128) TESSERA_WGMMA_RS_M64N128K16("f16");
    if constexpr (N == 256) TESSERA_WGMMA_RS_M64N256K16("f16");
  } else {
    if constexpr (N == 64) TESSERA_WGMMA_RS_M64N64K16("bf16");
    if constexpr (N == 128) TESSERA_WGMMA_RS_M64N128K16("bf16");
    if constexpr (N == 256) TESSERA_WGMMA_RS_M64N256K16("bf16");
  }
}

template <int N> TS_DEVICE void wgmma_fence_operand(float (&regs)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(regs[i])::"memory");
}
template <int N> TS_DEVICE void wgmma_fence_operand(uint32_t (&regs)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(regs[i])::"memory");
}

TS_DEVICE void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
TS_DEVICE void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

TS_DEVICE void tma_load_3d(void* smem_dst, const tensor_map_t* map, uint64_t* bar, int x_inner,
                           int y, int z_outer) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5}], [%2];\n" ::"r"(smem_addr(smem_dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(x_inner), "r"(y),
      "r"(z_outer)
      : "memory");
}

// ---------------------------------------------------------------- FP8 e4m3 (sm_90a)
//   wgmma        wgmma_m64k32_e4m3<N> (A and B from shared memory) is in the block above;
//                wgmma_m64k32_e4m3_rs<N>(d, const uint32_t (&a)[4], desc_b, accumulate)  A from
//                registers: warp w holds rows 16w..16w+15, register r row g + 8 (r % 2), bytes
//                j = 0..3 at columns 16 (r / 2) + 4q + j (the mma.m16n8k32 8-bit A layout)
//   conversions  pack4_e4m3(f0, f1, f2, f3) -> uint32_t   e4m3 RNE, saturating to +-448; f0 in
//                the low byte
#define TESSERA_WGMMA_E4M3_RS_M64N128K32                                                    \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                          \
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {"                             \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,"              \
      "%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,"                \
      "%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,"                \
      "%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"                                             \
      "}, {%64,%65,%66,%67}, %68, p, 1, 1;\n}\n"                                            \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),             \
        "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),       \
        "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),       \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),       \
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),       \
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),       \
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),       \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),       \
        "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),       \
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])                                  \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d))

template <int N>
TS_DEVICE void wgmma_m64k32_e4m3_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,
                                    bool accumulate) {
  static_assert(N == 128, "wgmma_m64k32_e4m3_rs: N is 128");
  const uint32_t scale_d = accumulate ? 1u : 0u;
  TESSERA_WGMMA_E4M3_RS_M64N128K32;
}

TS_DEVICE uint32_t pack4_e4m3(float f0, float f1, float f2, float f3) {
  uint32_t out;
  asm("{\n.reg .b16 lo, hi;\n"
      "cvt.rn.satfinite.e4m3x2.f32 lo, %2, %1;\n"  // the first operand lands in the upper byte
      "cvt.rn.satfinite.e4m3x2.f32 hi, %4, %3;\n"
      "mov.b32 %0, {lo, hi};\n}\n"
      : "=r"(out)
      : "f"(f0), "f"(f1), "f"(f2), "f"(f3));
  return out;
}

}  // namespace tessera

#endif  // sm_90a

#endif  // TESSERA_HOST_EMULATION
