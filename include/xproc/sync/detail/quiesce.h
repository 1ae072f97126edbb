#pragma once
// detail::quiesce: how a destructor waits for threads that were released from an object but may
// still be reading it (a woken condvar waiter on its way out of wait(), a barrier participant
// leaving a completed generation).
//
// Such threads leave within microseconds and nobody notifies a destructor, so it polls: it
// yields the CPU between polls (the leaving thread may need this CPU), then sleeps 100 us
// between polls, for at most kQuiesceBound. A thread that never leaves (one never released: a
// caller bug; one that died inside: Scope::process) costs that bound once, never a hang.

#include <chrono>
#include <thread>

#include "xproc/sync/scope.h"

namespace xproc::sync::detail {

inline constexpr std::chrono::seconds kQuiesceBound{1};

// Polls `done` until it returns true (then true) or `bound` passes (then false).
template <class Done>
bool quiesce(Done done, Clock::duration bound = kQuiesceBound) {
  const Deadline deadline = Clock::now() + bound;
  for (unsigned polls = 0; !done(); ++polls) {
    if (Clock::now() >= deadline) return false;
    if (polls < 1000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  return true;
}

}  // namespace xproc::sync::detail
