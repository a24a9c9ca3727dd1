// tessera/host/scheduler.h — runs a grid: one block after another, each block's threads as
// fibers resumed in rank order, deadlocks and memory faults turned into launch errors.
#pragma once

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fault.h"
#include "state.h"

namespace tessera {
namespace host {

[[noreturn]] inline void fiber_entry() {
  Launch& L = *active();
  L.body(L.params);
  L.fibers[L.current].state = FiberState::Done;
  for (;;) yield_to_scheduler();
}

inline void init_fiber(Launch& L, int tid) {
  Fiber& f = L.fibers[tid];
  f.state = FiberState::Runnable;
  f.wait_line = 0;
  f.copies.size = f.performed = 0;
  f.group_ends.size = f.groups_done = 0;
  char* top = L.stacks + static_cast<size_t>(tid + 1) * (FIBER_STACK_BYTES + GUARD_PAGE_BYTES);
  auto* sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;  // fiber_entry's (never used) return address keeps the ABI's alignment
  *--sp = reinterpret_cast<void*>(&fiber_entry);
  for (int reg = 0; reg < SAVED_REGISTERS; ++reg) *--sp = nullptr;
  f.sp = sp;
}

// No fiber can run, yet some have not finished: say which barrier or collective waits on whom.
inline void report_deadlock(Launch& L) {
  L.failed = true;
  int used = snprintf(L.error, ERROR_BYTES, "kernel %s block (%u,%u,%u): deadlock: ", L.kernel,
                      L.block_idx.x, L.block_idx.y, L.block_idx.z);
  char* out = L.error + used;
  const size_t room = static_cast<size_t>(ERROR_BYTES - used);
  for (int t = 0; t < L.num_threads; ++t) {
    if (L.fibers[t].state != FiberState::AtCollective) continue;
    const int warp = t / WARP_LANES;
    const WarpSlot& w = L.warps[warp];
    for (int l = 0; l < WARP_LANES; ++l) {
      const Fiber& other = L.fibers[warp * WARP_LANES + l];
      if (other.state == FiberState::AtCollective) continue;
      if (other.state == FiberState::Done) {
        snprintf(out, room, "warp %d never completes %s at line %d: lane %d exited", warp,
                 collective_name(w.kind[t % WARP_LANES]), w.line[t % WARP_LANES], l);
      } else {
        snprintf(out, room,
                 "warp %d never completes %s at line %d: lane %d waits at __syncthreads() "
                 "line %d",
                 warp, collective_name(w.kind[t % WARP_LANES]), w.line[t % WARP_LANES], l,
                 other.wait_line);
      }
      return;
    }
  }
  for (int t = 0; t < L.num_threads; ++t) {
    if (L.fibers[t].state != FiberState::AtBarrier) continue;
    for (int o = 0; o < L.num_threads; ++o) {
      if (L.fibers[o].state == FiberState::Done) {
        snprintf(out, room,
                 "__syncthreads() at line %d is never reached by thread %d (it exited); %d of "
                 "%d threads arrived",
                 L.fibers[t].wait_line, o, L.barrier_arrived, L.num_threads);
        return;
      }
    }
  }
  for (int t = 0; t < L.num_threads; ++t) {
    if (L.fibers[t].state != FiberState::AtNamedBarrier) continue;
    snprintf(out, room,
             "thread %d waits at line %d on a named barrier (bar.sync) that too few threads "
             "reach or arrive at",
             t, L.fibers[t].wait_line);
    return;
  }
  for (int t = 0; t < L.num_threads; ++t) {
    if (L.fibers[t].state != FiberState::AtMbarrier) continue;
    snprintf(out, room,
             "thread %d waits at line %d for an mbarrier phase that never completes (an arrival "
             "or a transaction byte count is missing)",
             t, L.fibers[t].wait_line);
    return;
  }
  snprintf(out, room, "no thread can make progress");
}

// Runs one block: always resumes the runnable thread of lowest rank (lowest thread id, or with
// MODE_REVERSE_WARPS the lanes of the highest warp first).
inline void run_block(Launch& L) {
  memset(L.smem, SMEM_POISON_BYTE, L.smem_bytes);
  ++block_epoch();
  L.barrier_arrived = 0;
  for (int w = 0; w * WARP_LANES < L.num_threads; ++w) L.warps[w].arrived = 0;
  for (int t = 0; t < L.num_threads; ++t) init_fiber(L, t);
  L.lowest_runnable = 0;
  int done = 0;
  while (done < L.num_threads) {
    int r = L.lowest_runnable;
    while (r < L.num_threads && L.fibers[L.order[r]].state != FiberState::Runnable) ++r;
    if (r == L.num_threads) {
      report_deadlock(L);
      return;
    }
    L.lowest_runnable = r;
    const int t = L.order[r];
    L.current = t;
    set_thread_builtins(L, t);
    tessera_host_switch(&L.scheduler_sp, L.fibers[t].sp);
    if (L.failed) return;
    if (L.fibers[t].state == FiberState::Done) ++done;
  }
}

// A SIGSEGV or SIGBUS jumped out of the current fiber: name it, and say whether the address lies
// in a guard page below a fiber stack (a stack overflow).
inline void report_fault(Launch& L) {
  const FaultState& fault = fault_state();
  const char* address = static_cast<const char*>(fault.address);
  const char* cause = "a wild pointer: check the index arithmetic of global loads and stores";
  if (address >= L.stacks && address < L.stacks + L.stacks_bytes &&
      static_cast<size_t>(address - L.stacks) % (FIBER_STACK_BYTES + GUARD_PAGE_BYTES) <
          GUARD_PAGE_BYTES) {
    cause = "a thread overflowed its fiber stack (FIBER_STACK_BYTES)";
  }
  L.failed = true;
  snprintf(L.error, ERROR_BYTES,
           "kernel %s block (%u,%u,%u) thread %d: %s at address %p: %s", L.kernel,
           L.block_idx.x, L.block_idx.y, L.block_idx.z, L.current,
           fault.signal == SIGBUS ? "bus error" : "segmentation fault", fault.address, cause);
}

inline int write_error(const char* message, char* err, int err_len) {
  if (err != nullptr && err_len > 0) snprintf(err, static_cast<size_t>(err_len), "%s", message);
  return ERROR_STATUS;
}

inline int launch(const char* kernel, int max_threads, KernelBody body, const void* params,
                  const unsigned* grid, const unsigned* block, size_t smem_bytes, int mode,
                  const uint64_t* regions, int num_regions, char* err, int err_len) {
  static pthread_mutex_t launch_mutex = PTHREAD_MUTEX_INITIALIZER;  // the built-ins are global
  const long threads = static_cast<long>(block[0]) * block[1] * block[2];
  if (threads <= 0 || threads > max_threads) {
    char message[256];
    snprintf(message, sizeof message,
             "kernel %s: block of %ld threads, but it is declared for at most %d", kernel,
             threads, max_threads);
    return write_error(message, err, err_len);
  }
  const size_t stride = FIBER_STACK_BYTES + GUARD_PAGE_BYTES;
  const size_t stacks_bytes = static_cast<size_t>(threads) * stride;
  void* stacks = mmap(nullptr, stacks_bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (stacks == MAP_FAILED) return write_error("could not map the fiber stacks", err, err_len);
  for (long t = 0; t < threads; ++t) {  // a guard page below each stack: overflow faults
    mprotect(static_cast<char*>(stacks) + static_cast<size_t>(t) * stride, GUARD_PAGE_BYTES,
             PROT_NONE);
  }
  static Launch launch_state;  // WarpSlots are large: keep them off the caller's stack
  pthread_mutex_lock(&launch_mutex);
  Launch& L = launch_state;
  L = Launch{};
  L.kernel = kernel;
  L.body = body;
  L.params = params;
  L.grid = {grid[0], grid[1], grid[2]};
  L.block = {block[0], block[1], block[2]};
  L.num_threads = static_cast<int>(threads);
  L.mode = mode;
  L.regions = regions;
  L.num_regions = num_regions;
  L.order = new int[static_cast<size_t>(threads)];
  L.rank = new int[static_cast<size_t>(threads)];
  const int num_warps = L.num_threads / WARP_LANES;
  const bool reverse = (mode & MODE_REVERSE_WARPS) && L.num_threads % WARP_LANES == 0;
  for (int r = 0; r < L.num_threads; ++r) {
    L.order[r] = reverse ? (num_warps - 1 - r / WARP_LANES) * WARP_LANES + r % WARP_LANES : r;
  }
  for (int r = 0; r < L.num_threads; ++r) L.rank[L.order[r]] = r;
  L.fibers = new Fiber[static_cast<size_t>(threads)];
  L.warps = new WarpSlot[static_cast<size_t>((threads + WARP_LANES - 1) / WARP_LANES)];
  L.stacks = static_cast<char*>(stacks);
  L.stacks_bytes = stacks_bytes;
  L.smem_bytes = smem_bytes;
  char* smem_storage = static_cast<char*>(malloc(smem_bytes + SMEM_ALIGN_BYTES));
  L.smem = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(smem_storage) +
                                    SMEM_ALIGN_BYTES - 1) & ~uintptr_t{SMEM_ALIGN_BYTES - 1});
  active() = &L;
  blockDim = L.block;
  gridDim = L.grid;
  {
    FaultGuard guard;
    if (sigsetjmp(fault_state().jump, 1) == 0) {
      for (unsigned z = 0; z < L.grid.z && !L.failed; ++z) {
        for (unsigned y = 0; y < L.grid.y && !L.failed; ++y) {
          for (unsigned x = 0; x < L.grid.x && !L.failed; ++x) {
            L.block_idx = {x, y, z};
            blockIdx = L.block_idx;
            run_block(L);
          }
        }
      }
    } else {
      report_fault(L);
    }
  }
  active() = nullptr;
  for (long t = 0; t < threads; ++t) {
    L.fibers[t].copies.release();
    L.fibers[t].group_ends.release();
  }
  delete[] L.fibers;
  delete[] L.warps;
  delete[] L.order;
  delete[] L.rank;
  free(smem_storage);
  munmap(stacks, stacks_bytes);
  const int status = L.failed ? write_error(L.error, err, err_len) : 0;
  pthread_mutex_unlock(&launch_mutex);
  return status;
}

}  // namespace host
}  // namespace tessera
