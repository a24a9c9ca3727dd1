// tessera/sm90_layout.h — Hopper shared-memory layout arithmetic, ONE copy for both halves:
// wgmma matrix descriptors, the swizzle modes that wgmma and TMA share, and the canonical
// element -> byte offset mapping of a descriptor. Included by intrinsics.cuh's device half (sm_90a)
// and by the host half (host/wgmma.h, host/tma.h), so device and emulator cannot disagree.
//
// PTX ISA, "Matrix Descriptor Format" (wgmma): a 64-bit value
//   bits 13-0   matrix-descriptor-encode(start address)      encode(x) = (x & 0x3FFFF) >> 4
//   bits 29-16  encode(leading dimension byte offset, LBO)
//   bits 45-32  encode(stride dimension byte offset, SBO)
//   bits 51-49  matrix base offset (0 when the swizzle pattern starts on its boundary)
//   bits 63-62  swizzle: 0 none, 1 128B, 2 64B, 3 32B
// Swizzle<B,4,3> (B = 3, 2, 1 for 128B, 64B, 32B) on a shared-memory byte address: bits [4, 4+B)
// ^= bits [7, 7+B), i.e. the 16-byte chunk index within a 2^B * 16-byte row is XORed with the
// row index (mod 2^B) of 128-byte rows; the pattern repeats every 1024/512/256 bytes. TMA's
// CU_TENSOR_MAP_SWIZZLE_128B/64B/32B write the same pattern.
// Canonical layouts (PTX ISA "Canonical Layouts"; T = 16 bytes / element bytes, c = swizzle
// bytes / 16), in elements, before the swizzle:
//   K-major,  none:     ((8,m),(T,2k)) : ((1T,SBO),(1,LBO))
//   K-major,  swizzled: ((8,m),(T,2k)) : ((cT,SBO),(1,T))
//   MN-major, none:     ((T,1,m),(8,k)) : ((1,T,SBO),(1T,LBO))
//   MN-major, swizzled: ((T,c,m),(8,k)) : ((1,T,LBO),(cT,SBO))
#pragma once

#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
#define TS_LAYOUT_FN __host__ __device__ __forceinline__
#else
#define TS_LAYOUT_FN inline
#endif

namespace tessera {

// Descriptor swizzle field values (bits 63-62).
enum : int { SWIZZLE_NONE = 0, SWIZZLE_128B = 1, SWIZZLE_64B = 2, SWIZZLE_32B = 3 };

// Bytes of one swizzled row (the pattern's width): 128, 64, 32; 16 (one chunk) without swizzle.
TS_LAYOUT_FN int swizzle_row_bytes(int swizzle) {
  return swizzle == SWIZZLE_128B ? 128 : swizzle == SWIZZLE_64B ? 64 : swizzle == SWIZZLE_32B ? 32 : 16;
}

// log2 of the 16-byte chunks per swizzled row: Swizzle<B,4,3>'s B (0 without swizzle).
TS_LAYOUT_FN int swizzle_bits(int swizzle) {
  return swizzle == SWIZZLE_128B ? 3 : swizzle == SWIZZLE_64B ? 2 : swizzle == SWIZZLE_32B ? 1 : 0;
}

// The physical byte address of logical (unswizzled) shared byte address `addr`.
TS_LAYOUT_FN unsigned swizzle_address(unsigned addr, int swizzle) {
  const unsigned mask = (1u << swizzle_bits(swizzle)) - 1u;
  return addr ^ (((addr >> 7) & mask) << 4);
}

TS_LAYOUT_FN unsigned long long descriptor_encode(unsigned x) {
  return static_cast<unsigned long long>((x & 0x3FFFFu) >> 4);
}

// A wgmma matrix descriptor; addresses are shared-window byte addresses.
TS_LAYOUT_FN unsigned long long make_wgmma_descriptor(unsigned start_addr, unsigned lbo_bytes,
                                                      unsigned sbo_bytes, int swizzle) {
  return descriptor_encode(start_addr) | (descriptor_encode(lbo_bytes) << 16) |
         (descriptor_encode(sbo_bytes) << 32) |
         (static_cast<unsigned long long>(swizzle & 3) << 62);
}

TS_LAYOUT_FN unsigned descriptor_start(unsigned long long desc) {
  return static_cast<unsigned>(desc & 0x3FFFu) << 4;
}
TS_LAYOUT_FN unsigned descriptor_lbo(unsigned long long desc) {
  return static_cast<unsigned>((desc >> 16) & 0x3FFFu) << 4;
}
TS_LAYOUT_FN unsigned descriptor_sbo(unsigned long long desc) {
  return static_cast<unsigned>((desc >> 32) & 0x3FFFu) << 4;
}
TS_LAYOUT_FN int descriptor_base_offset(unsigned long long desc) {
  return static_cast<int>((desc >> 49) & 0x7u);
}
TS_LAYOUT_FN int descriptor_swizzle(unsigned long long desc) {
  return static_cast<int>(desc >> 62);
}

// Logical byte offset (before the swizzle) from the descriptor's start of element
// (row, k) of a wgmma operand: row is M (A) or N (B), k the reduction index; `k_major` selects
// the layout (imm-trans 0) and elem_bytes the element size.
TS_LAYOUT_FN unsigned canonical_offset(int row, int k, bool k_major, int swizzle, unsigned lbo,
                                       unsigned sbo, int elem_bytes) {
  const int t = 16 / elem_bytes;  // elements per 16 bytes
  const int c = swizzle_row_bytes(swizzle) / 16;  // chunks per swizzled row
  if (k_major) {
    if (swizzle == SWIZZLE_NONE) {
      return static_cast<unsigned>((row % 8) * 16 + (row / 8) * static_cast<int>(sbo) +
                                   (k % t) * elem_bytes + (k / t) * static_cast<int>(lbo));
    }
    return static_cast<unsigned>((row % 8) * c * 16 + (row / 8) * static_cast<int>(sbo) +
                                 k * elem_bytes);
  }
  if (swizzle == SWIZZLE_NONE) {
    return static_cast<unsigned>((row % t) * elem_bytes + (row / t) * static_cast<int>(sbo) +
                                 (k % 8) * 16 + (k / 8) * static_cast<int>(lbo));
  }
  return static_cast<unsigned>((row % (c * t)) * elem_bytes +
                               (row / (c * t)) * static_cast<int>(lbo) + (k % 8) * c * 16 +
                               (k / 8) * static_cast<int>(sbo));
}

// The physical shared byte address wgmma reads for element (row, k) of descriptor `desc`
// (base offset 0: the swizzle is anchored at absolute 1024/512/256-byte boundaries).
TS_LAYOUT_FN unsigned descriptor_element_address(unsigned long long desc, int row, int k,
                                                 bool k_major, int elem_bytes) {
  const int swizzle = descriptor_swizzle(desc);
  const unsigned logical =
      descriptor_start(desc) + canonical_offset(row, k, k_major, swizzle, descriptor_lbo(desc),
                                                descriptor_sbo(desc), elem_bytes);
  return swizzle_address(logical, swizzle);
}

}  // namespace tessera
