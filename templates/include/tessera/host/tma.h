// tessera/host/tma.h — 2-D and 3-D tiled TMA loads (cp.async.bulk.tensor) from a tensor map.
//
// The emulator's tensor map is the 128-byte CUtensorMap slot filled by the host with
// HostTensorMap (templates/tma.py writes the same fields cuTensorMapEncodeTiled takes on a GPU).
// A load copies a box of box[1] rows x box[0] elements starting at element (x, y) into shared
// memory, rows packed at box[0] * elem_bytes, each byte address passed through the map's swizzle
// (sm90_layout.h swizzle_address, anchored at absolute shared addresses); elements outside the
// tensor read as zero; the box's full byte count completes on the barrier. It is performed when a
// thread waits on that barrier (eager mode: at issue).
#pragma once

#include <stdint.h>
#include <string.h>

#include "../sm90_layout.h"
#include "mbarrier.h"

namespace tessera {
namespace host {

constexpr uint32_t HOST_TENSOR_MAP_MAGIC = 0x50414D54u;  // "TMAP"

struct HostTensorMap {  // must match templates/tma.py's HOST_TENSOR_MAP_FORMAT
  uint32_t magic;
  uint32_t elem_bytes;
  uint64_t base;  // global address of element (0, 0)
  uint64_t dims[2];  // elements: inner (contiguous), outer
  uint64_t outer_stride_bytes;
  uint32_t box[2];  // elements: inner, outer
  uint32_t swizzle;  // SWIZZLE_NONE / _128B / _64B / _32B (descriptor codes)
  uint32_t reserved;
  // A third, outermost dimension (templates/tma.py TensorMap3D); 0 in a 2-D map's bytes.
  uint64_t depth;  // elements
  uint64_t depth_stride_bytes;
  uint32_t box_depth;
  uint32_t reserved2;
};
static_assert(sizeof(HostTensorMap) <= 128, "a tensor map is 128 bytes");

inline const HostTensorMap& host_tensor_map(const void* map, int line) {
  const auto* m = static_cast<const HostTensorMap*>(map);
  if (m->magic != HOST_TENSOR_MAP_MAGIC) {
    fail("TMA load at line %d: the tensor map was not encoded for the emulator "
         "(templates/tma.py TensorMap2D.host_bytes())",
         line);
  }
  return *m;
}

inline uint32_t tma_depth(const HostTensorMap& m) { return m.depth ? m.depth : 1; }
inline uint32_t tma_box_depth(const HostTensorMap& m) { return m.box_depth ? m.box_depth : 1; }

inline uint32_t tma_box_bytes(const HostTensorMap& m) {
  return m.box[0] * m.box[1] * tma_box_depth(m) * m.elem_bytes;
}

inline void perform_load(const TmaLoad& load) {
  const HostTensorMap& m = *static_cast<const HostTensorMap*>(load.map);
  const Launch& L = *active();
  const uint32_t dst0 = static_cast<uint32_t>(load.dst - L.smem);
  const uint32_t row_bytes = m.box[0] * m.elem_bytes;
  for (uint32_t plane = 0; plane < tma_box_depth(m); ++plane) {
    const long long z = static_cast<long long>(load.z) + plane;
    for (uint32_t r = 0; r < m.box[1]; ++r) {
      const long long y = static_cast<long long>(load.y) + r;
      const uint32_t row0 = dst0 + (plane * m.box[1] + r) * row_bytes;
      for (uint32_t c = 0; c < m.box[0]; ++c) {
        const long long x = static_cast<long long>(load.x) + c;
        const uint32_t addr =
            swizzle_address(row0 + c * m.elem_bytes, static_cast<int>(m.swizzle));
        char* dst = L.smem + addr;
        const bool inside = x >= 0 && y >= 0 && z >= 0 &&
                            static_cast<uint64_t>(x) < m.dims[0] &&
                            static_cast<uint64_t>(y) < m.dims[1] &&
                            static_cast<uint64_t>(z) < tma_depth(m);
        if (inside) {
          const char* src = reinterpret_cast<const char*>(m.base) +
                            static_cast<uint64_t>(z) * m.depth_stride_bytes +
                            static_cast<uint64_t>(y) * m.outer_stride_bytes +
                            static_cast<uint64_t>(x) * m.elem_bytes;
          memcpy(dst, src, m.elem_bytes);
        } else {
          memset(dst, 0, m.elem_bytes);
        }
      }
    }
  }
  mbarrier_complete_tx(load.bar_offset, tma_box_bytes(m), load.line);
}

inline void perform_loads_for(size_t bar_offset) {
  HopperBlock& hb = hopper();
  int kept = 0;
  for (int i = 0; i < hb.loads.size; ++i) {
    const TmaLoad load = hb.loads.data[i];
    if (load.bar_offset == bar_offset) {
      perform_load(load);
    } else {
      hb.loads.data[kept++] = load;
    }
  }
  hb.loads.size = kept;
}

// A load may land any time after its issue: it must not overwrite shared memory that a wgmma still
// in flight (issued, not yet covered by a wait_group) reads.
inline void check_no_wgmma_reads(uint32_t dst, uint32_t bytes, int line) {
  HopperBlock& hb = hopper();
  for (const Warpgroup& wg : hb.warpgroups) {
    for (int i = wg.done; i < wg.ops.size; ++i) {
      const WgmmaOp& op = wg.ops.data[i];
      for (int which = 0; which < 2; ++which) {
        if (dst < op.hi[which] && op.lo[which] < dst + bytes) {
          fail("TMA load at line %d overwrites shared bytes [%u, %u) that the wgmma issued at "
               "line %d still reads as operand %c: the stage was released before the "
               "wgmma.wait_group covering that wgmma",
               line, dst, dst + bytes, op.line, which == 0 ? 'A' : 'B');
        }
      }
    }
  }
}

// A 2-D load is a 3-D one at z = 0 (a 2-D map has depth 1).
inline void tma_load_3d(void* smem_dst, const void* map, void* bar, int x, int y, int z,
                        int line) {
  const HostTensorMap& m = host_tensor_map(map, line);
  const uint32_t dst = shared_offset(smem_dst, tma_box_bytes(m), "TMA load", line);
  if (dst % 128 != 0) {
    fail("TMA load at line %d: shared destination offset %u is not 128-byte aligned", line, dst);
  }
  const uint32_t row_bytes = m.box[0] * m.elem_bytes;
  if (m.swizzle != SWIZZLE_NONE &&
      row_bytes != static_cast<uint32_t>(swizzle_row_bytes(static_cast<int>(m.swizzle)))) {
    fail("TMA load at line %d: a swizzled box row must be the swizzle's %d bytes, not %u",
         line, swizzle_row_bytes(static_cast<int>(m.swizzle)), row_bytes);
  }
  const Launch& L = *active();
  if (L.num_regions > 0) {  // the whole tensor must lie inside one tensor of the launch
    const uint64_t begin = m.base;
    const uint64_t end = m.base + (tma_depth(m) - 1) * m.depth_stride_bytes +
                         (m.dims[1] - 1) * m.outer_stride_bytes + m.dims[0] * m.elem_bytes;
    bool inside = false;
    for (int r = 0; r < L.num_regions && !inside; ++r) {
      inside = begin >= L.regions[2 * r] && end <= L.regions[2 * r + 1];
    }
    if (!inside) fail("TMA load at line %d: the tensor map's tensor lies outside every tensor "
                      "of the launch", line);
  }
  const uint32_t bar_offset = shared_offset(bar, 8, "TMA load", line);
  find_mbarrier(bar, "TMA load", line);
  check_no_wgmma_reads(dst, tma_box_bytes(m), line);
  const TmaLoad load{static_cast<char*>(smem_dst), map, x, y, bar_offset, line, z};
  if (L.mode & MODE_EAGER_COPIES) {
    perform_load(load);
  } else {
    hopper().loads.push(load);
  }
}

inline void tma_load_2d(void* smem_dst, const void* map, void* bar, int x, int y, int line) {
  tma_load_3d(smem_dst, map, bar, x, y, 0, line);
}

}  // namespace host
}  // namespace tessera
