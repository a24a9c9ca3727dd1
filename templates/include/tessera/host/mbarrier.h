// tessera/host/mbarrier.h — transaction-count mbarriers with phase parity (PTX ISA "mbarrier").
//
// A barrier counts arrivals and transaction bytes per phase: the current phase completes when its
// pending arrival count and its tx-count both reach zero; then the phase number advances and the
// arrival count is re-armed. try_wait.parity(P) is true once the phase with parity P has completed,
// i.e. while the current phase's parity differs from P (so on a fresh barrier, parity 1 is done).
// The emulator completes the TMA loads signalling a barrier at the latest moment allowed: when a
// thread waits on that barrier (eager mode: at issue). A waiter whose phase is not complete then
// blocks until an arrival completes it; a phase nobody completes is reported as a deadlock.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "hopper_state.h"

namespace tessera {
namespace host {

constexpr int MBARRIER_MAX_COUNT = (1 << 20) - 1;  // PTX: arrival counts 1 .. 2^20 - 1
constexpr long MBARRIER_MAX_TX = (1L << 20) - 1;  // PTX: tx-count range +-(2^20 - 1)

inline void perform_loads_for(size_t bar_offset);  // host/tma.h

inline Mbarrier& find_mbarrier(const void* bar, const char* what, int line) {
  const uint32_t offset = shared_offset(bar, 8, what, line);
  if (offset % 8 != 0) fail("%s at line %d: mbarrier at shared offset %u is not 8-byte aligned",
                            what, line, offset);
  HopperBlock& hb = hopper();
  for (int i = 0; i < hb.barriers.size; ++i) {
    if (hb.barriers.data[i].offset == offset) return hb.barriers.data[i];
  }
  fail("%s at line %d: the mbarrier at shared offset %u was never initialised (mbarrier_init)",
       what, line, offset);
}

inline void mbarrier_init(void* bar, int count, int line) {
  if (count < 1 || count > MBARRIER_MAX_COUNT) {
    fail("mbarrier_init at line %d: count=%d must be in 1..%d", line, count, MBARRIER_MAX_COUNT);
  }
  const uint32_t offset = shared_offset(bar, 8, "mbarrier_init", line);
  HopperBlock& hb = hopper();
  for (int i = 0; i < hb.barriers.size; ++i) {
    if (hb.barriers.data[i].offset == offset) {
      hb.barriers.data[i] = Mbarrier{offset, count, count, 0, 0, line};
      return;
    }
  }
  hb.barriers.push(Mbarrier{offset, count, count, 0, 0, line});
  memset(bar, 0, 8);  // the object is opaque; poison would read as a half-initialised barrier
}

// Completes the current phase when nothing is pending, and wakes the threads waiting for it.
inline void mbarrier_try_complete(Mbarrier& b) {
  if (b.pending != 0 || b.tx != 0) return;
  ++b.phase;
  b.pending = b.count;
  Launch& L = *active();
  HopperBlock& hb = hopper();
  for (int t = 0; t < L.num_threads; ++t) {
    if (L.fibers[t].state == FiberState::AtMbarrier && hb.wait_bar[t] == b.offset &&
        (b.phase & 1u) != hb.wait_parity[t]) {
      make_runnable(L, t);
    }
  }
}

inline void mbarrier_expect_tx(Mbarrier& b, long bytes, int line) {
  b.tx += bytes;
  if (b.tx > MBARRIER_MAX_TX) {
    fail("mbarrier expect_tx at line %d: tx-count %ld exceeds %ld", line, b.tx, MBARRIER_MAX_TX);
  }
}

inline void mbarrier_arrive(void* bar, long expect_tx_bytes, int line) {
  Mbarrier& b = find_mbarrier(bar, "mbarrier_arrive", line);
  if (expect_tx_bytes > 0) mbarrier_expect_tx(b, expect_tx_bytes, line);
  if (b.pending == 0) {  // only possible while tx bytes hold the phase open
    fail("mbarrier_arrive at line %d: more arrivals than the barrier's count (%d, initialised at "
         "line %d) in one phase",
         line, b.count, b.init_line);
  }
  --b.pending;
  mbarrier_try_complete(b);
}

// A TMA load's bytes have landed: complete_tx on its barrier.
inline void mbarrier_complete_tx(size_t bar_offset, long bytes, int load_line) {
  HopperBlock& hb = hopper();
  for (int i = 0; i < hb.barriers.size; ++i) {
    Mbarrier& b = hb.barriers.data[i];
    if (b.offset != bar_offset) continue;
    b.tx -= bytes;
    if (b.tx < 0) {
      fail("the TMA load at line %d completes %ld bytes on the mbarrier at shared offset %zu, but "
           "its phase expected only %ld more: a missing mbarrier_arrive_expect_tx (the phase may "
           "already have completed without the data)",
           load_line, bytes, bar_offset, b.tx + bytes);
    }
    mbarrier_try_complete(b);
    return;
  }
  fail("the TMA load at line %d signals shared offset %zu, which holds no initialised mbarrier",
       load_line, bar_offset);
}

// Blocks until the phase with parity `parity` has completed; returns true (the device may return
// false on a time-out, so kernels call it in a loop).
inline bool mbarrier_try_wait_parity(void* bar, unsigned parity, int line) {
  if (parity > 1) fail("mbarrier_try_wait_parity at line %d: parity=%u must be 0 or 1", line, parity);
  Mbarrier* b = &find_mbarrier(bar, "mbarrier_try_wait_parity", line);
  if ((b->phase & 1u) != parity) return true;
  perform_loads_for(b->offset);
  b = &find_mbarrier(bar, "mbarrier_try_wait_parity", line);
  if ((b->phase & 1u) != parity) return true;
  Launch& L = *active();
  HopperBlock& hb = hopper();
  hb.wait_bar[L.current] = b->offset;
  hb.wait_parity[L.current] = parity;
  L.fibers[L.current].wait_line = line;
  L.fibers[L.current].state = FiberState::AtMbarrier;
  yield_to_scheduler();  // woken by the arrival that completes the phase
  return true;
}

}  // namespace host
}  // namespace tessera
