#pragma once
// Bounded spinning before a thread parks, shared by every primitive.
//
// A cross-CPU wake-up costs many microseconds on the VMs xproc targets, so a waiter first spins
// a bounded number of rounds (each `pause`, doubling up to a cap) in case the state changes
// soon; then it parks on a futex. The bound keeps a waiter from burning a CPU on a holder that
// is descheduled or dead.
//
// Between the spin and the park, some waiters also yield the CPU a bounded number of times
// (yield_until). On a machine with more runnable threads than CPUs the thread a waiter needs
// (a lock holder, a reader that must leave before a writer can enter) is often runnable but not
// running; sched_yield() hands it this CPU at once, where parking would add a futex sleep and,
// later, a cross-CPU wake-up of the waiter (many microseconds on a VM). When nothing else is
// runnable a yield returns at once and costs one system call.

#include <sched.h>

#include <cstdint>

namespace xproc::sync::detail {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#else
  asm volatile("" ::: "memory");
#endif
}

// Spins `rounds` times with exponential backoff capped at `max_pauses` pause instructions per
// round, calling `ready()` between rounds. Returns true as soon as ready() does.
template <class Ready>
bool spin_until(Ready&& ready, std::uint32_t rounds, std::uint32_t max_pauses = 64) noexcept {
  std::uint32_t pauses = 1;
  for (std::uint32_t round = 0; round < rounds; ++round) {
    if (ready()) return true;
    for (std::uint32_t i = 0; i < pauses; ++i) cpu_relax();
    if (pauses < max_pauses) pauses *= 2;
  }
  return ready();
}

// Yields the CPU up to `rounds` times, calling `ready()` after each. Returns true as soon as
// ready() does.
template <class Ready>
bool yield_until(Ready&& ready, std::uint32_t rounds) noexcept {
  for (std::uint32_t round = 0; round < rounds; ++round) {
    (void)::sched_yield();  // cannot fail on Linux
    if (ready()) return true;
  }
  return false;
}

}  // namespace xproc::sync::detail
