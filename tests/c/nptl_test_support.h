#pragma once
// Helpers of the nptl_*_test.cc files: scenarios of glibc's nptl test suite re-expressed
// against xproc's C API (docs/design/nptl-test-port.md maps each glibc test to its port).
//
// Handshakes between threads and forked processes are std::atomic<int> flags that live next to
// the primitive under test (in MAP_SHARED memory for processes): lock-free atomics work across
// processes. Waiting for a flag polls with sched_yield until a deadline, so a lost handshake
// fails the test instead of hanging it.

#include <sched.h>
#include <time.h>

#include <atomic>
#include <chrono>

#include "c_test_support.h"
#include "xproc/c/sync.h"

namespace xproc::test {

// Bound of every handshake wait and of every Child::wait in these tests.
inline constexpr std::chrono::seconds kHandshakeTimeout{30};

// A mutex initialized through an attribute object with the given type, robustness, pshared.
inline int make_mutex(xproc_mutex_t* mutex, int type, int robust, int pshared) {
  xproc_mutexattr_t attr;
  if (int code = xproc_mutexattr_init(&attr)) return code;
  int code = xproc_mutexattr_settype(&attr, type);
  if (code == 0) code = xproc_mutexattr_setrobust(&attr, robust);
  if (code == 0) code = xproc_mutexattr_setpshared(&attr, pshared);
  if (code == 0) code = xproc_mutex_init(mutex, &attr);
  const int destroyed = xproc_mutexattr_destroy(&attr);
  return code != 0 ? code : destroyed;
}

// Now on CLOCK_MONOTONIC, the clock of every xproc deadline.
inline std::chrono::nanoseconds monotonic_now() {
  struct timespec now {};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec);
}

inline std::chrono::nanoseconds to_duration(const struct timespec& time) {
  return std::chrono::seconds(time.tv_sec) + std::chrono::nanoseconds(time.tv_nsec);
}

// Waits until `flag` >= `value`; false when kHandshakeTimeout passes first.
inline bool await_at_least(const std::atomic<int>& flag, int value) {
  const auto deadline = monotonic_now() + kHandshakeTimeout;
  // acquire: pairs with the release store/increment of the other side, so what it wrote
  // before announcing is visible after this returns.
  while (flag.load(std::memory_order_acquire) < value) {
    if (monotonic_now() > deadline) return false;
    sched_yield();
  }
  return true;
}

// Announces progress to await_at_least on the other side.
inline void announce(std::atomic<int>& flag, int value) {
  flag.store(value, std::memory_order_release);  // pairs with await_at_least's acquire load
}

}  // namespace xproc::test
