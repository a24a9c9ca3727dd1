// tessera/host/fault.h — turns a memory fault inside an emulated kernel into a launch error.
//
// While a launch runs, SIGSEGV and SIGBUS are caught on an alternate signal stack (a fiber that
// overflowed its stack has none left) and jump back to the launcher, which reports the kernel,
// block, thread and faulting address instead of killing the Python process. Signal handlers are
// process-wide, so launches must not overlap: generator/host_build.py serialises them.
#pragma once

#include <setjmp.h>
#include <signal.h>
#include <stddef.h>

namespace tessera {
namespace host {

constexpr size_t FAULT_STACK_BYTES = 64 * 1024;

struct FaultState {
  sigjmp_buf jump;
  int signal = 0;
  const void* address = nullptr;
};

inline FaultState& fault_state() {
  static FaultState state;
  return state;
}

inline void on_fault(int signal, siginfo_t* info, void* /*context*/) {
  FaultState& state = fault_state();
  state.signal = signal;
  state.address = info->si_addr;
  siglongjmp(state.jump, 1);
}

// Installs the fault handlers and the alternate stack for its lifetime; restores the previous
// ones (Python's faulthandler, for one) when it goes out of scope.
class FaultGuard {
 public:
  FaultGuard() {
    stack_t stack = {};
    stack.ss_sp = stack_bytes_;
    stack.ss_size = sizeof stack_bytes_;
    sigaltstack(&stack, &old_stack_);
    struct sigaction action = {};
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &old_segv_);
    sigaction(SIGBUS, &action, &old_bus_);
  }
  ~FaultGuard() {
    sigaction(SIGSEGV, &old_segv_, nullptr);
    sigaction(SIGBUS, &old_bus_, nullptr);
    sigaltstack(&old_stack_, nullptr);
  }
  FaultGuard(const FaultGuard&) = delete;
  FaultGuard& operator=(const FaultGuard&) = delete;

 private:
  static inline char stack_bytes_[FAULT_STACK_BYTES];
  stack_t old_stack_ = {};
  struct sigaction old_segv_ = {};
  struct sigaction old_bus_ = {};
};

}  // namespace host
}  // namespace tessera
