// tessera/host/atomic_audit.h — counts the atomic adds into a launch's accumulator tensors.
//
// Blocks run one after another here, so a plain store or a plain `+=` into an accumulator that
// several blocks add into computes the same sum as atomic_add_f32 does; on a GPU the blocks run
// at once and such a write loses updates. To catch it, the Python side names each accumulator
// (address range, one uint32 counter per 4-byte element) before a launch; atomic_add_f32 and
// atomic_add_i32 (float32 or int32 accumulators) count every add they perform into it, and after the launch an element that changed from its
// zero start with a count of zero was written by something other than an atomic.
#pragma once

#include <stdint.h>

namespace tessera {
namespace host {

constexpr int MAX_AUDITED_ACCUMULATORS = 4;

struct AtomicAudit {
  uint64_t begin[MAX_AUDITED_ACCUMULATORS] = {};
  uint64_t end[MAX_AUDITED_ACCUMULATORS] = {};
  uint32_t* counts[MAX_AUDITED_ACCUMULATORS] = {};
  int size = 0;
};

// One per host library (each kernel source is its own shared library); set under the launch
// mutex by the Python side, so launches of one library never share it concurrently.
inline AtomicAudit atomic_audit;

inline void count_atomic_add(const void* address) {
  const uint64_t at = reinterpret_cast<uint64_t>(address);
  for (int i = 0; i < atomic_audit.size; ++i) {
    if (at >= atomic_audit.begin[i] && at < atomic_audit.end[i]) {
      ++atomic_audit.counts[i][(at - atomic_audit.begin[i]) / sizeof(uint32_t)];
      return;
    }
  }
}

}  // namespace host
}  // namespace tessera

// Sets the accumulators audited by the next launches (n = 0: none); `ranges` holds n
// [begin, end) address pairs and `counts` n counter arrays. Returns -1 if n is too large.
extern "C" __attribute__((visibility("default"), used)) inline int tessera_set_atomic_audit(
    int n, const uint64_t* ranges, uint32_t** counts) {
  using tessera::host::atomic_audit;
  if (n < 0 || n > tessera::host::MAX_AUDITED_ACCUMULATORS) return -1;
  for (int i = 0; i < n; ++i) {
    atomic_audit.begin[i] = ranges[2 * i];
    atomic_audit.end[i] = ranges[2 * i + 1];
    atomic_audit.counts[i] = counts[i];
  }
  atomic_audit.size = n;
  return 0;
}
