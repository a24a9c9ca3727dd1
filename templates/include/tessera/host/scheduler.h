// tessera/host/scheduler.h — the host emulator's execution model: fibers, barriers, warp
// collectives, cp.async groups and the grid launch. See intrinsics_host.h for the model's rules.
//
// Only C headers are included: the host build compiles one of these per kernel source, and the
// C++ standard library headers would triple its compile time.
#pragma once

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fragments.h"

struct tessera_dim3 {
  unsigned x = 1, y = 1, z = 1;
};

// CUDA built-ins: rewritten by the scheduler before every switch into a fiber.
static tessera_dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace tessera {
namespace host {

constexpr size_t FIBER_STACK_BYTES = 256 * 1024;  // kernels keep large register arrays
constexpr size_t GUARD_PAGE_BYTES = 4096;
constexpr int WARP_LANES = 32;
constexpr unsigned char SMEM_POISON_BYTE = 0xFF;  // NaN as f16, bf16 and f32
constexpr size_t SMEM_ALIGN_BYTES = 128;
constexpr int ERROR_BYTES = 1024;
constexpr int ERROR_STATUS = 1;

// Launch modes (bit flags). The default schedule (late copies, warp 0 first) exposes a tile read
// before its wait or before the barrier after it. EAGER_COPIES performs each cp.async at issue,
// the earliest moment allowed, which exposes a tile refilled before every warp finished reading
// it (a missing barrier at the end of a pipeline stage). REVERSE_WARPS runs the highest warp
// first, exposing races where a lower warp writes what a higher one reads.
constexpr int MODE_EAGER_COPIES = 1;
constexpr int MODE_REVERSE_WARPS = 2;

// tessera_host_switch(void** save_sp, void* load_sp): push the callee-saved registers, save the
// stack pointer, load the other one, pop and return into it. Unlike swapcontext it makes no
// signal-mask syscall, which matters at one switch per lane per warp collective.
#if defined(__x86_64__)
extern "C" void tessera_host_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .p2align 4
  .hidden tessera_host_switch
  .type tessera_host_switch,@function
tessera_host_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size tessera_host_switch, .-tessera_host_switch
)");
constexpr int SAVED_REGISTERS = 6;
#else
#error "the Tessera host emulator needs x86-64 (its fiber switch is hand-written assembly)"
#endif

enum class FiberState : uint8_t { Runnable, AtBarrier, AtCollective, Done };

enum class Collective : int { None, MmaF16, MmaBf16, Ldmatrix, LdmatrixTrans, Shfl };

inline const char* collective_name(Collective kind) {
  switch (kind) {
    case Collective::MmaF16: return "mma.m16n8k16.f16";
    case Collective::MmaBf16: return "mma.m16n8k16.bf16";
    case Collective::Ldmatrix: return "ldmatrix";
    case Collective::LdmatrixTrans: return "ldmatrix.trans";
    case Collective::Shfl: return "shfl.xor";
    default: return "none";
  }
}

struct AsyncCopy {
  char* dst;
  const char* src;
  int src_bytes;
};

// A growable array of plain values (no <vector>: see the header comment).
template <typename T> struct Buffer {
  T* data = nullptr;
  int size = 0;
  int capacity = 0;
  void push(const T& value) {
    if (size == capacity) {
      capacity = capacity ? 2 * capacity : 64;
      data = static_cast<T*>(realloc(data, sizeof(T) * static_cast<size_t>(capacity)));
    }
    data[size++] = value;
  }
  void release() {
    free(data);
    data = nullptr;
    size = capacity = 0;
  }
};

// Per thread: copies in issue order; group_ends[i] is one past the last copy of committed group
// i; copies before `performed` are done, copies after the last group end are not committed yet.
struct Fiber {
  void* sp = nullptr;
  FiberState state = FiberState::Done;
  int wait_line = 0;
  Buffer<AsyncCopy> copies;
  Buffer<int> group_ends;
  int performed = 0;
  int groups_done = 0;
};

struct WarpSlot {
  int arrived = 0;
  Collective kind[WARP_LANES];
  int line[WARP_LANES];
  int param[WARP_LANES];  // ldmatrix matrix count, shuffle lane mask
  uint32_t a[WARP_LANES][4];
  uint32_t b[WARP_LANES][2];
  float c[WARP_LANES][4];
  const char* addr[WARP_LANES];
  float value[WARP_LANES];
  uint32_t out_regs[WARP_LANES][4];
  float out_f32[WARP_LANES][4];
};

using KernelBody = void (*)(const void* params);

struct Launch {
  const char* kernel = "";
  KernelBody body = nullptr;
  const void* params = nullptr;
  tessera_dim3 grid, block, block_idx;
  int num_threads = 0;
  Fiber* fibers = nullptr;
  WarpSlot* warps = nullptr;
  char* stacks = nullptr;
  size_t stacks_bytes = 0;
  char* smem = nullptr;
  size_t smem_bytes = 0;
  int mode = 0;
  int* order = nullptr;  // scheduling priority: order[rank] = thread id
  int* rank = nullptr;  // rank[thread id] = its place in `order`
  int barrier_arrived = 0;
  int current = -1;
  int lowest_runnable = 0;  // a rank: no runnable thread ranks lower
  void* scheduler_sp = nullptr;
  bool failed = false;
  char error[ERROR_BYTES] = {};
};

inline Launch*& active() {
  static Launch* launch = nullptr;
  return launch;
}

inline void set_thread_builtins(const Launch& L, int tid) {
  const unsigned t = static_cast<unsigned>(tid);
  threadIdx.x = t % L.block.x;
  threadIdx.y = (t / L.block.x) % L.block.y;
  threadIdx.z = t / (L.block.x * L.block.y);
}

inline void yield_to_scheduler() {
  Launch& L = *active();
  tessera_host_switch(&L.fibers[L.current].sp, L.scheduler_sp);
}

// Records the first fault (printf-style message) and leaves the fiber for good; the scheduler
// then abandons the launch.
[[noreturn]] __attribute__((format(printf, 1, 2))) inline void fail(const char* format, ...) {
  Launch& L = *active();
  if (!L.failed) {
    L.failed = true;
    int used = snprintf(L.error, ERROR_BYTES, "kernel %s block (%u,%u,%u) thread %d: ", L.kernel,
                        L.block_idx.x, L.block_idx.y, L.block_idx.z, L.current);
    va_list args;
    va_start(args, format);
    vsnprintf(L.error + used, static_cast<size_t>(ERROR_BYTES - used), format, args);
    va_end(args);
  }
  for (;;) yield_to_scheduler();
}

inline void make_runnable(Launch& L, int tid) {
  L.fibers[tid].state = FiberState::Runnable;
  if (L.rank[tid] < L.lowest_runnable) L.lowest_runnable = L.rank[tid];
}

// ---------------------------------------------------------------- barrier
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
    if (w.kind[lane] != kind || w.line[lane] != w.line[0] || w.param[lane] != w.param[0]) {
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

// ---------------------------------------------------------------- cp.async
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

// ---------------------------------------------------------------- scheduler
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
  snprintf(out, room, "no thread can make progress");
}

// Runs one block: always resumes the runnable thread of lowest rank (lowest thread id, or with
// MODE_REVERSE_WARPS the lanes of the highest warp first).
inline void run_block(Launch& L) {
  memset(L.smem, SMEM_POISON_BYTE, L.smem_bytes);
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

inline int write_error(const char* message, char* err, int err_len) {
  if (err != nullptr && err_len > 0) snprintf(err, static_cast<size_t>(err_len), "%s", message);
  return ERROR_STATUS;
}

inline int launch(const char* kernel, int max_threads, KernelBody body, const void* params,
                  const unsigned* grid, const unsigned* block, size_t smem_bytes, int mode,
                  char* err, int err_len) {
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
  for (unsigned z = 0; z < L.grid.z && !L.failed; ++z) {
    for (unsigned y = 0; y < L.grid.y && !L.failed; ++y) {
      for (unsigned x = 0; x < L.grid.x && !L.failed; ++x) {
        L.block_idx = {x, y, z};
        blockIdx = L.block_idx;
        run_block(L);
      }
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
