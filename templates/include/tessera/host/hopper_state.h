// tessera/host/hopper_state.h — per-block state of the Hopper emulation (mbarriers, TMA loads in
// flight, warpgroups' wgmma queues) and the warpgroup-wide collective that wgmma uses.
//
// The state lives outside Launch and resets itself at the first use in each new block
// (block_epoch()), so the rest of the emulator does not know about it.
#pragma once

#include <stdint.h>
#include <string.h>

#include "state.h"

namespace tessera {
namespace host {

constexpr int WARPGROUP_THREADS = 128;
constexpr int MAX_WARPGROUPS = 1024 / WARPGROUP_THREADS;
constexpr int MAX_BLOCK_THREADS = 1024;

struct Mbarrier {
  size_t offset;  // shared offset of its 8 bytes
  int count;  // arrivals per phase
  int pending;  // arrivals still missing in the current phase
  long tx;  // transaction bytes still expected in the current phase
  unsigned phase;  // phases completed so far; the current phase has parity phase & 1
  int init_line;
};

struct TmaLoad {  // a cp.async.bulk.tensor in flight: performed at the wait on its barrier
  char* dst;
  const void* map;  // the kernel's tensor_map_t
  int x, y;
  size_t bar_offset;
  int line;
};

// One wgmma.mma_async in flight: D (each thread's registers) = A * B + (scale_d ? D : 0).
struct WgmmaOp {
  uint64_t desc_a, desc_b;
  int n;
  bool trans_b, bf16, accumulate;
  int line;
  bool e4m3 = false;  // FP8 e4m3 operands: k32, one byte an element, A and B K-major
  uint32_t lo[2], hi[2];  // shared bytes [lo, hi) that A (0) and B (1) read
  float* d[WARPGROUP_THREADS];
};

enum class WarpgroupOp : int { None, Mma, Fence, Commit, Wait };

inline const char* warpgroup_op_name(WarpgroupOp op) {
  switch (op) {
    case WarpgroupOp::Mma: return "wgmma.mma_async";
    case WarpgroupOp::Fence: return "wgmma.fence";
    case WarpgroupOp::Commit: return "wgmma.commit_group";
    case WarpgroupOp::Wait: return "wgmma.wait_group";
    default: return "none";
  }
}

struct Warpgroup {
  int arrived = 0;
  WarpgroupOp op[WARPGROUP_THREADS];
  int line[WARPGROUP_THREADS];
  int param[WARPGROUP_THREADS];  // wait_group N; wgmma: N columns
  uint64_t desc_a[WARPGROUP_THREADS], desc_b[WARPGROUP_THREADS];
  float* d[WARPGROUP_THREADS];
  int flags[WARPGROUP_THREADS];  // wgmma: bit 0 accumulate, bit 1 trans_b, bit 2 bf16, bit 3 e4m3
  Buffer<WgmmaOp> ops;  // issue order; ops before `done` are complete
  Buffer<int> group_ends;  // one past the last op of each committed group
  int done = 0;
  int groups_done = 0;
  bool fenced = false;  // a wgmma.fence since the block start or the last wait_group
};

struct HopperBlock {
  unsigned long epoch = 0;
  Buffer<Mbarrier> barriers;
  Buffer<TmaLoad> loads;
  Warpgroup warpgroups[MAX_WARPGROUPS];
  size_t wait_bar[MAX_BLOCK_THREADS];  // the barrier a thread is blocked on (AtMbarrier)
  unsigned wait_parity[MAX_BLOCK_THREADS];
};

// This block's Hopper state, reset on the first call in a new block.
inline HopperBlock& hopper() {
  static HopperBlock* block = new HopperBlock;  // large: never on a fiber stack
  if (block->epoch != block_epoch()) {
    block->epoch = block_epoch();
    block->barriers.size = 0;
    block->loads.size = 0;
    for (Warpgroup& wg : block->warpgroups) {
      wg.arrived = 0;
      wg.ops.size = wg.done = 0;
      wg.group_ends.size = wg.groups_done = 0;
      wg.fenced = false;
    }
  }
  return *block;
}

// The shared-window address of a dynamic shared memory pointer (its offset in the block's buffer).
inline uint32_t shared_offset(const void* ptr, size_t bytes, const char* what, int line) {
  const Launch& L = *active();
  const char* p = static_cast<const char*>(ptr);
  if (p < L.smem || p + bytes > L.smem + L.smem_bytes) {
    fail("%s at line %d: address %p is not inside this block's %zu bytes of dynamic shared memory",
         what, line, ptr, L.smem_bytes);
  }
  return static_cast<uint32_t>(p - L.smem);
}

// Every thread of the calling thread's warpgroup arrives; the last one checks that all 128 reached
// the same operation at the same line, runs `complete(wg)` and releases the others. The caller has
// written its own operands into wg's per-thread slots first (index: thread id % 128).
template <typename Complete>
inline void warpgroup_arrive(Warpgroup& wg, WarpgroupOp op, int line, Complete complete) {
  Launch& L = *active();
  const int tid = L.current;
  const int group = tid / WARPGROUP_THREADS;
  if ((group + 1) * WARPGROUP_THREADS > L.num_threads) {
    fail("%s at line %d needs a full warpgroup of 128 threads, but warpgroup %d of this "
         "%d-thread block is partial",
         warpgroup_op_name(op), line, group, L.num_threads);
  }
  const int slot = tid % WARPGROUP_THREADS;
  wg.op[slot] = op;
  wg.line[slot] = line;
  Fiber& self = L.fibers[tid];
  self.wait_line = line;
  if (++wg.arrived < WARPGROUP_THREADS) {
    self.state = FiberState::AtCollective;
    yield_to_scheduler();
    return;
  }
  wg.arrived = 0;
  for (int t = 0; t < WARPGROUP_THREADS; ++t) {
    if (wg.op[t] != op || wg.line[t] != line) {
      fail("warpgroup %d diverged: thread %d is at %s (line %d) but thread %d is at %s (line %d)",
           group, group * WARPGROUP_THREADS + t, warpgroup_op_name(wg.op[t]), wg.line[t], tid,
           warpgroup_op_name(op), line);
    }
  }
  complete(wg);
  for (int t = 0; t < WARPGROUP_THREADS; ++t) {
    const int other = group * WARPGROUP_THREADS + t;
    if (other != tid) make_runnable(L, other);
  }
}

}  // namespace host
}  // namespace tessera
