// tessera/host/async_copy.h — cp.async, commit_group and wait_group per thread: a FIFO of
// committed groups, performed at the wait that covers them (or at issue, in eager mode).
#pragma once

#include <stdint.h>
#include <string.h>

#include "state.h"

namespace tessera {
namespace host {

inline void cp_async_16(void* smem, const void* gmem, int src_bytes, int line) {
  Launch& L = *active();
  char* dst = static_cast<char*>(smem);
  if (dst < L.smem || dst + 16 > L.smem + L.smem_bytes ||
      reinterpret_cast<uintptr_t>(dst) % 16 != 0) {
    fail("cp.async at line %d: destination (shared offset %td) is not a 16-byte aligned range "
         "inside the block's %zu bytes of dynamic shared memory",
         line, dst - L.smem, L.smem_bytes);
  }
  if (src_bytes < 0 || src_bytes > 16) {
    fail("cp.async at line %d: src_bytes=%d must be in 0..16", line, src_bytes);
  }
  if (reinterpret_cast<uintptr_t>(gmem) % 16 != 0) {  // PTX: aligned to cp-size, or it faults
    fail("cp.async at line %d: global source %p is not 16-byte aligned", line, gmem);
  }
  if (src_bytes > 0 && L.num_regions > 0) {  // on a GPU, an illegal address
    const uint64_t begin = reinterpret_cast<uintptr_t>(gmem);
    bool inside = false;
    for (int r = 0; r < L.num_regions && !inside; ++r) {
      inside = begin >= L.regions[2 * r] && begin + src_bytes <= L.regions[2 * r + 1];
    }
    if (!inside) {
      fail("cp.async at line %d: reads %d bytes at %p, outside every tensor of the launch",
           line, src_bytes, gmem);
    }
  }
  if (L.mode & MODE_EAGER_COPIES) {
    memcpy(dst, gmem, static_cast<size_t>(src_bytes));
    memset(dst + src_bytes, 0, static_cast<size_t>(16 - src_bytes));
    return;
  }
  L.fibers[L.current].copies.push({dst, static_cast<const char*>(gmem), src_bytes});
}

inline void cp_async_commit() {
  Fiber& self = active()->fibers[active()->current];
  self.group_ends.push(self.copies.size);
}

// Performs this thread's oldest groups until at most `pending_allowed` remain in flight: the
// latest moment the PTX rules allow, so a tile read before its wait still holds poison.
inline void cp_async_wait(int pending_allowed) {
  Fiber& self = active()->fibers[active()->current];
  while (self.group_ends.size - self.groups_done > pending_allowed) {
    const int end = self.group_ends.data[self.groups_done++];
    for (; self.performed < end; ++self.performed) {
      const AsyncCopy& copy = self.copies.data[self.performed];
      memcpy(copy.dst, copy.src, static_cast<size_t>(copy.src_bytes));
      memset(copy.dst + copy.src_bytes, 0, static_cast<size_t>(16 - copy.src_bytes));
    }
  }
  if (self.groups_done == self.group_ends.size && self.performed == self.copies.size) {
    self.copies.size = self.performed = 0;  // all drained: reuse the storage
    self.group_ends.size = self.groups_done = 0;
  }
}

}  // namespace host
}  // namespace tessera
