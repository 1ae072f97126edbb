// xproc::sync::EventCount: the slow paths (parking and waking). Contract in event_count.h.
#include "xproc/sync/event_count.h"

#include "xproc/sync/detail/spin.h"
#include "xproc/sys/futex.h"

namespace xproc::sync {

void EventCount::notify_slow(int count) noexcept {
  // release: publishes the caller's change of the condition to a waiter whose acquire load of
  // epoch_ (prepare_wait() or wait_impl()) reads this or a later bump (an RMW chain).
  epoch_.fetch_add(1, std::memory_order_release);
  // A failed wake (impossible on a valid word) leaves waiters to their deadline or next notify.
  (void)sys::futex_wake(epoch_, count, futex_scope());
}

std::error_code EventCount::wait(Key key) noexcept {
  return wait_impl(key, nullptr);
}

std::error_code EventCount::wait_until(Key key, Deadline deadline) noexcept {
  return wait_impl(key, &deadline);
}

std::error_code EventCount::wait_impl(Key key, const Deadline* deadline) noexcept {
  // acquire (all loads of epoch_ below): pairs with the release bump in notify_slow(), so the
  // notifier's change of the condition happens-before our return.
  auto notified = [&] { return epoch_.load(std::memory_order_acquire) != key.epoch; };
  std::error_code result;
  if (!detail::spin_until(notified, spin_rounds_)) {
    for (;;) {
      const std::error_code error =
          deadline != nullptr ? sys::futex_wait(epoch_, key.epoch, futex_scope(), *deadline)
                              : sys::futex_wait(epoch_, key.epoch, futex_scope());
      if (notified()) break;
      if (error == errc::timed_out) {
        result = error;
        break;
      }
      // {} with the epoch unchanged: a spurious wake-up (or a wrap, see the header): park again.
    }
  }
  // relaxed: a counter for notifiers only; leaving late or early costs a syscall, never a wake.
  waiters_.fetch_sub(1, std::memory_order_relaxed);
  return result;
}

}  // namespace xproc::sync
