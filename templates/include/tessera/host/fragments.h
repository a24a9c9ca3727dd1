// tessera/host/fragments.h — the one place where the PTX lane-to-element fragment layouts live.
//
// shared/reference/ptx-fragments.md states them: g = lane >> 2, t = lane % 4; a .b32 register
// keeps the lower-indexed 16-bit element in its low half.
//   mma.m16n8k16 A (16x16 row): a_i at row g + 8*((i>>1)&1), column 2t + (i&1) + 8*(i>=4)
//                B (16x8 col):  b_i at row 2t + (i&1) + 8*(i>=2), column g
//                C/D (16x8):    c_i at row g + 8*(i>=2),     column 2t + (i&1)
//   ldmatrix m8n8: lane 8j+r gives the address of row r of matrix j; register j of lane l holds
//                M_j[l>>2][2(l%4)+h] (h = half), or with .trans M_j[2(l%4)+h][l>>2].
#pragma once

#include <stdint.h>
#include <string.h>

#include "half.h"

// The host build compiles kernels at -O0 (fast to build); the emulator itself stays optimised.
#pragma GCC push_options
#pragma GCC optimize("O2")

namespace tessera {
namespace host {

constexpr int FRAGMENT_LANES = 32;

inline int mma_a_row(int lane, int i) { return (lane >> 2) + 8 * ((i >> 1) & 1); }
inline int mma_a_col(int lane, int i) { return 2 * (lane % 4) + (i & 1) + (i >= 4 ? 8 : 0); }
inline int mma_b_row(int lane, int i) { return 2 * (lane % 4) + (i & 1) + (i >= 2 ? 8 : 0); }
inline int mma_b_col(int lane, int /*i*/) { return lane >> 2; }
inline int mma_c_row(int lane, int i) { return (lane >> 2) + (i >= 2 ? 8 : 0); }
inline int mma_c_col(int lane, int i) { return 2 * (lane % 4) + (i & 1); }

inline float unpack_half(uint32_t reg, int half, bool bf16_type) {
  const auto bits = static_cast<uint16_t>(half ? reg >> 16 : reg & 0xffffu);
  return bf16_type ? bf16_bits_to_float(bits) : f16_bits_to_float(bits);
}

// D = A * B + C for one warp, from the 32 lanes' registers. Products of two 16-bit values are
// exact in float; sums are accumulated in double and rounded once, a tolerance-level difference
// from the tensor cores' (unspecified) order.
inline void mma_m16n8k16_warp(const uint32_t (*a)[4], const uint32_t (*b)[2],
                              const float (*c)[4], float (*d)[4], bool bf16_type) {
  float A[16][16], B[16][8];
  for (int lane = 0; lane < FRAGMENT_LANES; ++lane) {
    for (int i = 0; i < 8; ++i) {
      A[mma_a_row(lane, i)][mma_a_col(lane, i)] = unpack_half(a[lane][i >> 1], i & 1, bf16_type);
    }
    for (int i = 0; i < 4; ++i) {
      B[mma_b_row(lane, i)][mma_b_col(lane, i)] = unpack_half(b[lane][i >> 1], i & 1, bf16_type);
    }
  }
  for (int lane = 0; lane < FRAGMENT_LANES; ++lane) {
    for (int i = 0; i < 4; ++i) {
      const int row = mma_c_row(lane, i);
      const int col = mma_c_col(lane, i);
      double acc = c[lane][i];
      for (int k = 0; k < 16; ++k) acc += static_cast<double>(A[row][k] * B[k][col]);
      d[lane][i] = static_cast<float>(acc);
    }
  }
}

// One warp's ldmatrix of `matrices` (1, 2 or 4) 8x8 b16 matrices; rows[8j+r] is row r of matrix j.
inline void ldmatrix_warp(const char* const* rows, int matrices, bool trans,
                          uint32_t (*out)[4]) {
  for (int j = 0; j < matrices; ++j) {
    uint16_t M[8][8];
    for (int r = 0; r < 8; ++r) memcpy(M[r], rows[8 * j + r], sizeof M[r]);
    for (int lane = 0; lane < FRAGMENT_LANES; ++lane) {
      const int g = lane >> 2;
      const int t2 = 2 * (lane % 4);
      const uint16_t lo = trans ? M[t2][g] : M[g][t2];
      const uint16_t hi = trans ? M[t2 + 1][g] : M[g][t2 + 1];
      out[lane][j] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
    }
  }
}

}  // namespace host
}  // namespace tessera

#pragma GCC pop_options
