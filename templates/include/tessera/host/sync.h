// tessera/host/sync.h — __syncthreads() and the warp collectives (mma, ldmatrix, shuffles):
// every thread or lane arrives and waits; the last to arrive checks, computes and releases.
#pragma once

#include <stdint.h>

#include "fragments.h"
#include "state.h"

namespace tessera {
namespace host {

inline void sync_threads(int line) {
  Launch& L = *active();
  Fiber& self = L.fibers[L.current];
  self.wait_line = line;
  if (++L.barrier_arrived < L.num_threads) {
    self.state = FiberState::AtBarrier;
    yield_to_scheduler();
    return;
  }
  L.barrier_arrived = 0;
  for (int t = 0; t < L.num_threads; ++t) {
    if (L.fibers[t].wait_line != line) {
      fail("threads reached different __syncthreads(): thread %d waits at line %d, thread %d "
           "at line %d",
           t, L.fibers[t].wait_line, L.current, line);
    }
  }
  for (int t = 0; t < L.num_threads; ++t) {
    if (t != L.current) make_runnable(L, t);
  }
}

// ---------------------------------------------------------------- warp collectives
inline void check_smem_row(const Launch& L, const char* addr, int lane, const char* what) {
  if (addr < L.smem || addr + 16 > L.smem + L.smem_bytes) {
    fail("%s: lane %d row address %p is outside this block's %zu bytes of dynamic shared memory",
         what, lane, static_cast<const void*>(addr), L.smem_bytes);
  }
  if (reinterpret_cast<uintptr_t>(addr) % 16 != 0) {
    fail("%s: lane %d row address (shared offset %td) is not 16-byte aligned", what, lane,
         addr - L.smem);
  }
}

// Runs in the 32nd lane to arrive, once every lane of the warp has deposited its operands.
inline void complete_collective(Launch& L, WarpSlot& w, int warp) {
  const Collective kind = w.kind[0];
  for (int lane = 1; lane < WARP_LANES; ++lane) {
    // Shuffle lanes may pass different lane masks; ldmatrix lanes must agree on the form.
    const bool same_param = kind == Collective::Shfl || w.param[lane] == w.param[0];
    if (w.kind[lane] != kind || w.line[lane] != w.line[0] || !same_param) {
      fail("warp %d diverged: lane 0 is at %s (line %d) but lane %d is at %s (line %d)", warp,
           collective_name(kind), w.line[0], lane, collective_name(w.kind[lane]), w.line[lane]);
    }
  }
  switch (kind) {
    case Collective::MmaF16:
    case Collective::MmaBf16:
      mma_m16n8k16_warp(w.a, w.b, w.c, w.out_f32, kind == Collective::MmaBf16);
      break;
    case Collective::Ldmatrix:
    case Collective::LdmatrixTrans:
      for (int lane = 0; lane < 8 * w.param[0]; ++lane) {
        check_smem_row(L, w.addr[lane], lane, collective_name(kind));
      }
      ldmatrix_warp(w.addr, w.param[0], kind == Collective::LdmatrixTrans, w.out_regs);
      break;
    case Collective::Shfl:
      for (int lane = 0; lane < WARP_LANES; ++lane) {
        w.out_f32[lane][0] = w.value[(lane ^ w.param[lane]) & (WARP_LANES - 1)];
      }
      break;
    default:
      fail("unknown warp collective");
  }
}

inline WarpSlot& my_slot(int* lane) {
  Launch& L = *active();
  *lane = L.current % WARP_LANES;
  return L.warps[L.current / WARP_LANES];
}

// The caller has written this lane's operands into its slot; waits for the warp and returns with
// the lane's outputs in the slot.
inline void arrive(Collective kind, int line, int param) {
  Launch& L = *active();
  const int tid = L.current;
  const int warp = tid / WARP_LANES;
  const int lane = tid % WARP_LANES;
  if ((warp + 1) * WARP_LANES > L.num_threads) {
    fail("%s at line %d needs a full warp, but warp %d of this %d-thread block is partial",
         collective_name(kind), line, warp, L.num_threads);
  }
  WarpSlot& w = L.warps[warp];
  w.kind[lane] = kind;
  w.line[lane] = line;
  w.param[lane] = param;
  Fiber& self = L.fibers[tid];
  self.wait_line = line;
  if (++w.arrived < WARP_LANES) {
    self.state = FiberState::AtCollective;
    yield_to_scheduler();
    return;
  }
  w.arrived = 0;
  complete_collective(L, w, warp);
  for (int l = 0; l < WARP_LANES; ++l) {
    const int t = warp * WARP_LANES + l;
    if (t != tid) make_runnable(L, t);
  }
}

}  // namespace host
}  // namespace tessera
