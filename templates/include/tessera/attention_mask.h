// tessera/attention_mask.h — FlashAttention-2's key masks and score biases, one definition for
// the attention kernels on the device and in the host emulation (the same source builds in both).
//
// Rows and keys are positions in their own sequences; off = seq_kv - seq_q aligns the causal
// diagonal and the window bottom-right, as FlashAttention-2 does: row i's diagonal key is i + off.
//   key_hidden<CAUSAL, HAS_WINDOW>(row, key, seq_kv, off, left, right)
//       true for a key past seq_kv, above the causal diagonal, or outside the window
//       [i + off - left, i + off + right] (a side < 0 is unbounded)
//   alibi_bias(slope, row, key, off) = -slope * |row + off - key|   (FA2's ALiBi, causal or not)
#pragma once

#if defined(TESSERA_HOST_EMULATION)
#define TESSERA_MASK_FN inline
#else
#define TESSERA_MASK_FN __device__ __forceinline__
#endif

namespace tessera {

template <bool CAUSAL, bool HAS_WINDOW>
TESSERA_MASK_FN bool key_hidden(int row, int key, int seq_kv, int off, int window_left,
                                int window_right) {
  const int diagonal = row + off;
  const bool outside_window =
      HAS_WINDOW && ((window_left >= 0 && key < diagonal - window_left) ||
                     (window_right >= 0 && key > diagonal + window_right));
  return key >= seq_kv || (CAUSAL && key > diagonal) || outside_window;
}

TESSERA_MASK_FN float alibi_bias(float slope, int row, int key, int off) {
  return -slope * fabsf(float(row + off - key));
}

}  // namespace tessera
