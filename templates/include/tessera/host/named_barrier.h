// tessera/host/named_barrier.h — bar.sync / bar.arrive on named barriers 1..15 (PTX ISA "bar").
//
// A named barrier completes when `threads` threads have arrived in its current phase, counting
// both bar.sync (arrive and wait) and bar.arrive (arrive only); every arrival of a phase names
// the same thread count, a multiple of the warp size. Barrier 0 is __syncthreads (host/sync.h).
// A phase nobody completes leaves its waiters blocked and is reported as a deadlock.
#pragma once

#include "hopper_state.h"

namespace tessera {
namespace host {

inline NamedBarrier& named_barrier_arrival(int id, int threads, const char* what, int line) {
  Launch& L = *active();
  if (id < 1 || id >= NAMED_BARRIERS) {
    fail("%s at line %d: barrier id %d must be in 1..%d (0 is __syncthreads)", what, line, id,
         NAMED_BARRIERS - 1);
  }
  if (threads < WARP_LANES || threads % WARP_LANES != 0 || threads > L.num_threads) {
    fail("%s at line %d: thread count %d must be a multiple of %d and at most the block's %d",
         what, line, threads, WARP_LANES, L.num_threads);
  }
  NamedBarrier& b = hopper().named[id];
  if (b.arrived == 0) {
    b.threads = threads;
    b.line = line;
  } else if (b.threads != threads) {
    fail("%s at line %d: barrier %d expects %d threads, but the arrival at line %d in the same "
         "phase named %d",
         what, line, id, threads, b.line, b.threads);
  }
  return b;
}

// Completes the phase if this arrival was its last; returns whether it did.
inline bool named_barrier_complete(NamedBarrier& b, int id) {
  if (++b.arrived < b.threads) return false;
  b.arrived = 0;
  Launch& L = *active();
  HopperBlock& hb = hopper();
  for (int t = 0; t < L.num_threads; ++t) {
    if (L.fibers[t].state == FiberState::AtNamedBarrier && hb.named_wait[t] == id) {
      make_runnable(L, t);
    }
  }
  return true;
}

inline void named_barrier_sync(int id, int threads, int line) {
  NamedBarrier& b = named_barrier_arrival(id, threads, "named_barrier_sync", line);
  if (named_barrier_complete(b, id)) return;
  Launch& L = *active();
  hopper().named_wait[L.current] = id;
  L.fibers[L.current].wait_line = line;
  L.fibers[L.current].state = FiberState::AtNamedBarrier;
  yield_to_scheduler();
}

inline void named_barrier_arrive(int id, int threads, int line) {
  named_barrier_complete(named_barrier_arrival(id, threads, "named_barrier_arrive", line), id);
}

}  // namespace host
}  // namespace tessera
