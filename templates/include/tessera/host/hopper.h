// tessera/host/hopper.h — the Hopper (sm_90a) block of the intrinsics contract, host half: the
// same names and signatures as intrinsics.cuh's device block, mapped onto host/mbarrier.h,
// host/tma.h and host/wgmma.h. Included at the end of intrinsics_host.h.
#pragma once

#include "../sm90_layout.h"
#include "mbarrier.h"
#include "named_barrier.h"
#include "tma.h"
#include "wgmma.h"

// Params by value, as on the device (where it is __grid_constant__ so TMA can address its maps).
#define TESSERA_KERNEL_SM90(name, Params, threads) TESSERA_KERNEL(name, Params, threads)

namespace tessera {

using uint64_t = ::uint64_t;

struct alignas(64) tensor_map_t {
  uint64_t opaque[16];
};

// Rounds up to a 1024-byte boundary of the shared window (the offset in the block's buffer).
inline char* align_smem_1024(char* ptr) {
  const size_t offset = static_cast<size_t>(ptr - host::active()->smem);
  return ptr + (((offset + 1023u) & ~size_t{1023}) - offset);
}

inline uint64_t wgmma_descriptor(const void* smem, uint32_t lbo_bytes, uint32_t sbo_bytes,
                                 int swizzle, int line = __builtin_LINE()) {
  return make_wgmma_descriptor(host::shared_offset(smem, 16, "wgmma_descriptor", line), lbo_bytes,
                               sbo_bytes, swizzle);
}

inline void wgmma_fence(int line = __builtin_LINE()) { host::wgmma_fence(line); }
inline void wgmma_commit_group(int line = __builtin_LINE()) { host::wgmma_commit_group(line); }
template <int N> inline void wgmma_wait_group(int line = __builtin_LINE()) {
  static_assert(N >= 0 && N <= 7, "wgmma_wait_group<N>: N in 0..7");
  host::wgmma_wait_group(N, line);
}

template <typename T, int N, int TRANS_B>
inline void wgmma_m64k16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool accumulate,
                         int line = __builtin_LINE()) {
  static_assert(N == 64 || N == 128 || N == 192 || N == 256,
                "wgmma_m64k16: N is 64, 128, 192 or 256");
  static_assert(__is_same(T, f16_t) || __is_same(T, bf16_t), "wgmma_m64k16: f16_t or bf16_t");
  static_assert(TRANS_B == 0 || TRANS_B == 1, "wgmma_m64k16: TRANS_B is 0 or 1");
  host::wgmma_mma(d, N, desc_a, desc_b, accumulate, TRANS_B == 1, __is_same(T, bf16_t), line);
}

// FP8 e4m3, m64nNk32: A and B K-major (no transpose for 8-bit types in the ISA).
template <int N>
inline void wgmma_m64k32_e4m3(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b,
                              bool accumulate, int line = __builtin_LINE()) {
  static_assert(N == 64 || N == 128 || N == 192 || N == 256,
                "wgmma_m64k32_e4m3: N is 64, 128, 192 or 256");
  host::wgmma_mma(d, N, desc_a, desc_b, accumulate, false, false, line, nullptr, true);
}

inline void mbarrier_init(uint64_t* bar, uint32_t count, int line = __builtin_LINE()) {
  host::mbarrier_init(bar, static_cast<int>(count), line);
}
inline void mbarrier_arrive(uint64_t* bar, int line = __builtin_LINE()) {
  host::mbarrier_arrive(bar, 0, line);
}
inline void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t tx_bytes,
                                      int line = __builtin_LINE()) {
  host::mbarrier_arrive(bar, static_cast<long>(tx_bytes), line);
}
inline bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity,
                                     int line = __builtin_LINE()) {
  return host::mbarrier_try_wait_parity(bar, parity, line);
}
inline void mbarrier_wait_parity(uint64_t* bar, uint32_t parity, int line = __builtin_LINE()) {
  while (!host::mbarrier_try_wait_parity(bar, parity, line)) {
  }
}

// No proxy is modelled: generic writes are visible to TMA and wgmma at once on the host.
inline void fence_proxy_async() {}

inline void tma_load_2d(void* smem_dst, const tensor_map_t* map, uint64_t* bar, int x_inner,
                        int y_outer, int line = __builtin_LINE()) {
  host::tma_load_2d(smem_dst, map, bar, x_inner, y_outer, line);
}

inline void tma_load_3d(void* smem_dst, const tensor_map_t* map, uint64_t* bar, int x_inner, int y,
                        int z_outer, int line = __builtin_LINE()) {
  host::tma_load_3d(smem_dst, map, bar, x_inner, y, z_outer, line);
}

template <typename T, int N, int TRANS_B>
inline void wgmma_m64k16_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,
                            bool accumulate, int line = __builtin_LINE()) {
  static_assert(N == 64 || N == 128 || N == 256, "wgmma_m64k16_rs: N is 64, 128 or 256");
  static_assert(__is_same(T, f16_t) || __is_same(T, bf16_t), "wgmma_m64k16_rs: f16_t or bf16_t");
  static_assert(TRANS_B == 0 || TRANS_B == 1, "wgmma_m64k16_rs: TRANS_B is 0 or 1");
  host::wgmma_mma(d, N, 0, desc_b, accumulate, TRANS_B == 1, __is_same(T, bf16_t), line, a);
}

template <int N>
inline void wgmma_m64k32_e4m3_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,
                                 bool accumulate, int line = __builtin_LINE()) {
  static_assert(N == 128, "wgmma_m64k32_e4m3_rs: N is 128");
  host::wgmma_mma(d, N, 0, desc_b, accumulate, false, false, line, a, true);
}

inline uint32_t pack4_e4m3(float f0, float f1, float f2, float f3) {
  return static_cast<uint32_t>(host::float_to_e4m3(f0)) |
         (static_cast<uint32_t>(host::float_to_e4m3(f1)) << 8) |
         (static_cast<uint32_t>(host::float_to_e4m3(f2)) << 16) |
         (static_cast<uint32_t>(host::float_to_e4m3(f3)) << 24);
}

// The host compiler sees no asynchrony: wgmma results land at wait_group in program order.
template <typename T, int N> inline void wgmma_fence_operand(T (&)[N]) {}

inline void named_barrier_sync(int id, int threads, int line = __builtin_LINE()) {
  host::named_barrier_sync(id, threads, line);
}
inline void named_barrier_arrive(int id, int threads, int line = __builtin_LINE()) {
  host::named_barrier_arrive(id, threads, line);
}

// Register reallocation has no host meaning; the bounds are checked as ptxas would.
template <int N> inline void setmaxnreg_inc() {
  static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, a multiple of 8");
}
template <int N> inline void setmaxnreg_dec() {
  static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, a multiple of 8");
}

}  // namespace tessera
