// xproc::sync::Spinlock: the contended path. Contract in spinlock.h.
#include "xproc/sync/spinlock.h"

#include <sched.h>

#include "xproc/sync/detail/spin.h"

namespace xproc::sync {

bool Spinlock::lock_slow(const Deadline* deadline) noexcept {
  std::uint32_t pauses = 1;
  std::uint32_t rounds_at_cap = 0;
  for (;;) {
    // relaxed: the "test" of TTAS only reads the line (shared, no invalidation traffic); the
    // acquire comes from the exchange in acquire_once().
    if (word_.load(std::memory_order_relaxed) == 0 && acquire_once()) return true;
    if (deadline != nullptr && Clock::now() >= *deadline) return false;
    for (std::uint32_t i = 0; i < pauses; ++i) detail::cpu_relax();
    if (pauses < kMaxPauses) {
      pauses *= 2;
    } else if (++rounds_at_cap >= kYieldAfterRounds) {
      sched_yield();  // the holder may be preempted on this very CPU
    }
  }
}

}  // namespace xproc::sync
