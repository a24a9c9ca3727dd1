// tessera/host/state.h — the host emulator's state: fibers, warp slots, the launch, the
// fiber switch, and how a fiber reports a fault. See intrinsics_host.h for the model's rules.
//
// Only C headers are included: the host build compiles these once per kernel source, and the
// C++ standard library headers would triple its compile time.
#pragma once

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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

// AtMbarrier: blocked in mbarrier_try_wait_parity until the phase completes (host/mbarrier.h).
// AtNamedBarrier: blocked in bar.sync on a named barrier (host/named_barrier.h).
enum class FiberState : uint8_t { Runnable, AtBarrier, AtCollective, AtMbarrier, Done, AtNamedBarrier };

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
  const uint64_t* regions = nullptr;  // [begin, end) address pairs of the tensors, if given
  int num_regions = 0;
  int* order = nullptr;  // scheduling priority: order[rank] = thread id
  int* rank = nullptr;  // rank[thread id] = its place in `order`
  int barrier_arrived = 0;
  int current = -1;
  int lowest_runnable = 0;  // a rank: no runnable thread ranks lower
  void* scheduler_sp = nullptr;
  bool failed = false;
  char error[ERROR_BYTES] = {};
};

// Counts blocks run by this process: per-block emulator state kept outside Launch (host/hopper_state.h)
// resets itself when the epoch moves on.
inline unsigned long& block_epoch() {
  static unsigned long epoch = 0;
  return epoch;
}

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

}  // namespace host
}  // namespace tessera
