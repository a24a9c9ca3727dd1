// tessera/host/wgmma.h — wgmma.mma_async m64nNk16 (f16/bf16, A and B from shared memory through
// matrix descriptors), wgmma.fence / commit_group / wait_group, as warpgroup collectives.
//
// Rules the emulator enforces (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply"):
//   * all 128 threads of a warpgroup reach the same wgmma operation (same line), and agree on
//     its descriptors and shape;
//   * a wgmma.fence precedes the first wgmma.mma_async and every wgmma.mma_async issued after a
//     wait_group (the accumulators were accessible in between) — stricter than "after a register
//     was touched", which the emulator cannot see, and what every pipeline does anyway;
//   * an operation's results appear at the wait_group that covers its commit group, the latest
//     moment allowed: only then are the operands read from shared memory and the accumulators
//     written, so a stage refilled before the wait changes the result.
// Accumulator fragment (m64nNk16, f32): thread t of the warpgroup, warp w = t / 32, lane l,
// g = l >> 2, q = l % 4: register i holds row 16w + g + 8 * ((i % 4) >= 2), column
// 8 * (i / 4) + 2q + (i % 2) — the mma.m16n8 C layout repeated over N / 8 column blocks.
#pragma once

#include <stdint.h>
#include <string.h>

#include "../sm90_layout.h"
#include "fragments.h"
#include "hopper_state.h"

#pragma GCC push_options
#pragma GCC optimize("O2")

namespace tessera {
namespace host {

constexpr int WGMMA_M = 64;
constexpr int WGMMA_K = 16;
constexpr int WGMMA_MAX_N = 256;
constexpr int WGMMA_K_E4M3 = 32;  // m64nNk32 for FP8: 32 one-byte elements of k
constexpr int WGMMA_MAX_K = WGMMA_K_E4M3;

inline int wgmma_k(const WgmmaOp& op) { return op.e4m3 ? WGMMA_K_E4M3 : WGMMA_K; }
inline int wgmma_elem_bytes(const WgmmaOp& op) { return op.e4m3 ? 1 : 2; }

inline int wgmma_d_row(int thread, int i) {
  const int lane = thread % 32;
  return 16 * (thread / 32) + (lane >> 2) + ((i % 4) >= 2 ? 8 : 0);
}
inline int wgmma_d_col(int thread, int i) { return 8 * (i / 4) + 2 * (thread % 32 % 4) + (i % 2); }

inline float smem_element(uint32_t addr, bool bf16_type, const WgmmaOp& op, char operand) {
  const Launch& L = *active();
  const int bytes = wgmma_elem_bytes(op);
  if (static_cast<size_t>(addr) + bytes > L.smem_bytes) {
    fail("wgmma.mma_async at line %d: operand %c reads shared offset %u, past the block's %zu "
         "bytes of dynamic shared memory (check the descriptor)",
         op.line, operand, addr, L.smem_bytes);
  }
  if (op.e4m3) return e4m3_bits_to_float(static_cast<uint8_t>(L.smem[addr]));
  uint16_t bits;
  memcpy(&bits, L.smem + addr, 2);
  return bf16_type ? bf16_bits_to_float(bits) : f16_bits_to_float(bits);
}

// Performs one wgmma: reads A (64 x K, K-major) and B (N x K; K-major or N-major) through the
// descriptors, K = 16 (f16/bf16) or 32 (e4m3), then D = A * B + (accumulate ? D : 0) in every
// thread's registers. Products of 16-bit or 8-bit values are exact in float; each output's K
// products are summed in double and rounded once.
inline void perform_wgmma(const WgmmaOp& op) {
  static float A[WGMMA_M][WGMMA_MAX_K], B[WGMMA_MAX_N][WGMMA_MAX_K];
  const int K = wgmma_k(op);
  const int elem = wgmma_elem_bytes(op);
  for (int m = 0; m < WGMMA_M; ++m) {
    for (int k = 0; k < K; ++k) {
      A[m][k] =
          smem_element(descriptor_element_address(op.desc_a, m, k, true, elem), op.bf16, op, 'A');
    }
  }
  for (int n = 0; n < op.n; ++n) {
    for (int k = 0; k < K; ++k) {
      B[n][k] = smem_element(descriptor_element_address(op.desc_b, n, k, !op.trans_b, elem),
                             op.bf16, op, 'B');
    }
  }
  for (int t = 0; t < WARPGROUP_THREADS; ++t) {
    float* d = op.d[t];
    for (int i = 0; i < op.n / 2; ++i) {
      const int row = wgmma_d_row(t, i);
      const int col = wgmma_d_col(t, i);
      double acc = op.accumulate ? d[i] : 0.0;
      for (int k = 0; k < K; ++k) acc += static_cast<double>(A[row][k] * B[col][k]);
      d[i] = static_cast<float>(acc);
    }
  }
}

// The shared byte ranges the operands cover, for the TMA overwrite check (host/tma.h).
inline void operand_footprint(WgmmaOp& op) {
  for (int which = 0; which < 2; ++which) {
    const int rows = which == 0 ? WGMMA_M : op.n;
    const bool k_major = which == 0 || !op.trans_b;
    const uint64_t desc = which == 0 ? op.desc_a : op.desc_b;
    uint32_t lo = UINT32_MAX, hi = 0;
    const int elem = wgmma_elem_bytes(op);
    for (int r = 0; r < rows; ++r) {
      for (int k = 0; k < wgmma_k(op); ++k) {
        const uint32_t addr = descriptor_element_address(desc, r, k, k_major, elem);
        lo = addr < lo ? addr : lo;
        hi = addr + elem > hi ? addr + elem : hi;
      }
    }
    op.lo[which] = lo;
    op.hi[which] = hi;
  }
}

inline Warpgroup& my_warpgroup() {
  return hopper().warpgroups[active()->current / WARPGROUP_THREADS];
}

inline void wgmma_fence(int line) {
  warpgroup_arrive(my_warpgroup(), WarpgroupOp::Fence, line, [](Warpgroup& wg) {
    wg.fenced = true;
  });
}

inline void wgmma_mma(float* d, int n, uint64_t desc_a, uint64_t desc_b, bool accumulate,
                      bool trans_b, bool bf16_type, int line, bool e4m3_type = false) {
  Warpgroup& wg = my_warpgroup();
  const int slot = active()->current % WARPGROUP_THREADS;
  wg.desc_a[slot] = desc_a;
  wg.desc_b[slot] = desc_b;
  wg.d[slot] = d;
  wg.param[slot] = n;
  wg.flags[slot] = (accumulate ? 1 : 0) | (trans_b ? 2 : 0) | (bf16_type ? 4 : 0) |
                   (e4m3_type ? 8 : 0);
  warpgroup_arrive(wg, WarpgroupOp::Mma, line, [line](Warpgroup& g) {
    for (int t = 1; t < WARPGROUP_THREADS; ++t) {
      if (g.desc_a[t] != g.desc_a[0] || g.desc_b[t] != g.desc_b[0] || g.param[t] != g.param[0] ||
          g.flags[t] != g.flags[0]) {
        fail("wgmma.mma_async at line %d: warpgroup threads 0 and %d pass different descriptors, "
             "shape or scale-d",
             line, t);
      }
    }
    if (!g.fenced) {
      fail("wgmma.mma_async at line %d without a wgmma.fence since the start or the last "
           "wgmma.wait_group: the accumulator registers may still be in use",
           line);
    }
    for (int t = 0; t < 2; ++t) {
      const uint64_t desc = t == 0 ? g.desc_a[0] : g.desc_b[0];
      if (descriptor_base_offset(desc) != 0) {
        fail("wgmma.mma_async at line %d: descriptor %c has a non-zero base offset; the emulator "
             "supports swizzle patterns starting on their 1024/512/256-byte boundary only",
             line, t == 0 ? 'A' : 'B');
      }
    }
    WgmmaOp op;
    op.desc_a = g.desc_a[0];
    op.desc_b = g.desc_b[0];
    op.n = g.param[0];
    op.accumulate = g.flags[0] & 1;
    op.trans_b = g.flags[0] & 2;
    op.bf16 = g.flags[0] & 4;
    op.e4m3 = g.flags[0] & 8;
    op.line = line;
    operand_footprint(op);
    memcpy(op.d, g.d, sizeof op.d);
    g.ops.push(op);
  });
}

inline void wgmma_commit_group(int line) {
  warpgroup_arrive(my_warpgroup(), WarpgroupOp::Commit, line, [](Warpgroup& wg) {
    wg.group_ends.push(wg.ops.size);
  });
}

// Completes the oldest committed groups until at most `pending_allowed` remain in flight.
inline void wgmma_wait_group(int pending_allowed, int line) {
  Warpgroup& wg = my_warpgroup();
  wg.param[active()->current % WARPGROUP_THREADS] = pending_allowed;
  warpgroup_arrive(wg, WarpgroupOp::Wait, line, [pending_allowed](Warpgroup& g) {
    while (g.group_ends.size - g.groups_done > pending_allowed) {
      const int end = g.group_ends.data[g.groups_done++];
      for (; g.done < end; ++g.done) perform_wgmma(g.ops.data[g.done]);
    }
    g.fenced = false;
    if (g.groups_done == g.group_ends.size && g.done == g.ops.size) {
      g.ops.size = g.done = 0;
      g.group_ends.size = g.groups_done = 0;
    }
  });
}

}  // namespace host
}  // namespace tessera

#pragma GCC pop_options
