// xproc::sync::Once: taking the runner role, waiting, publishing. Contract in once.h.
#include "xproc/sync/once.h"

#include <algorithm>

#include "xproc/sync/detail/spin.h"
#include "xproc/sys/futex.h"
#include "xproc/sys/thread_id.h"

namespace xproc::sync {

namespace {
constexpr int kWakeAll = 0x7fffffff;
}

std::uint64_t Once::runner_token() const noexcept {
  // relaxed: a diagnostic snapshot (may be torn across a change of runner).
  return std::uint64_t{token_high_.load(std::memory_order_relaxed)} << 32 |
         token_low_.load(std::memory_order_relaxed);
}

Once::Step Once::begin(const Deadline* deadline) noexcept {
  // acquire: pairs with the release exchange in finish(): "done" makes f's effects visible.
  std::uint32_t state = state_.load(std::memory_order_acquire);
  if (state == kDone) return Step::done;
  if (state == kNotRun) {
    // acquire on success: a retry after a thrown f sees the failed runner's writes (finish()'s
    // release); relaxed on failure: we re-read in the caller's loop.
    if (state_.compare_exchange_strong(state, kRunning, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
      const std::uint64_t token = sys::this_thread_token();
      // relaxed: diagnostics and deadlock detection (see the layout comment).
      token_low_.store(static_cast<std::uint32_t>(token), std::memory_order_relaxed);
      token_high_.store(static_cast<std::uint32_t>(token >> 32), std::memory_order_relaxed);
      return Step::run;
    }
    return Step::retry;
  }
  if (state != kRunning && state != kRunningWaited) return Step::corrupt;
  if (runner_token() == sys::this_thread_token()) return Step::deadlock;  // f calls us back

  // Spin a little: a short f may finish now.
  auto changed = [&] {
    // acquire: as the first load above.
    const std::uint32_t now = state_.load(std::memory_order_acquire);
    return now != kRunning && now != kRunningWaited;
  };
  if (detail::spin_until(changed, spin_rounds_)) return Step::retry;
  // Announce: set the waiters value. One word, one RMW chain with finish()'s exchange: if our
  // CAS comes first, finish() reads kRunningWaited and wakes; if it comes later, it fails and
  // we re-read. relaxed: the acquire comes from the re-read in the caller's next begin().
  if (state == kRunning &&
      !state_.compare_exchange_strong(state, kRunningWaited, std::memory_order_relaxed,
                                      std::memory_order_relaxed)) {
    return Step::retry;
  }
  Deadline slice{};
  const Deadline* park = deadline;
  if (scope_ != 0) {
    // A runner may die between publishing and waking: re-check every kDeathRecheck.
    slice = Clock::now() + kDeathRecheck;
    if (deadline != nullptr) slice = std::min(slice, *deadline);
    park = &slice;
  }
  const std::error_code error = park != nullptr
                                    ? sys::futex_wait(state_, kRunningWaited, futex_scope(), *park)
                                    : sys::futex_wait(state_, kRunningWaited, futex_scope());
  if (error == errc::timed_out && deadline != nullptr && Clock::now() >= *deadline && !changed()) {
    return Step::timed_out;
  }
  return Step::retry;
}

void Once::finish(std::uint32_t next) noexcept {
  // relaxed: the runner's own later reads see these (same thread); others use them only as
  // diagnostics.
  token_low_.store(0, std::memory_order_relaxed);
  token_high_.store(0, std::memory_order_relaxed);
  // release: publishes f's effects with kDone (pairs with is_done() / begin()'s acquire);
  // one RMW so a concurrent announcement (kRunning -> kRunningWaited) is never missed.
  const std::uint32_t previous = state_.exchange(next, std::memory_order_release);
  if (previous == kRunningWaited) (void)sys::futex_wake(state_, kWakeAll, futex_scope());
}

}  // namespace xproc::sync
