#pragma once
// xproc::sync::EventCount: "wait until a condition I check myself becomes true" without a lock,
// for threads of one process (Scope::thread) or processes sharing MAP_SHARED memory
// (Scope::process). The building block under channels (not-empty / not-full) and Semaphore-like
// waits on state that lives elsewhere.
//
// Protocol (the caller owns the condition; the event count only carries wake-ups):
//   waiter:    for (;;) {
//                if (condition()) break;                // fast path, no event-count traffic
//                EventCount::Key key = ec.prepare_wait(); // 1) announce
//                if (condition()) { ec.cancel_wait(); break; }  // 2) re-check
//                (void)ec.wait(key);                     // 3) park unless notified since 1)
//              }
//   notifier:  make condition() true (any store, even relaxed); ec.notify_one() or notify_all().
// Every prepare_wait() is closed by exactly one of cancel_wait(), wait() or wait_until().
//
// Guarantee (folly EventCount's wording): if a notify_*() call N happens after a change C of the
// condition in the notifier's thread, then a waiter whose re-check 2) does not see C is woken by N
// (notify_all) or N wakes some waiter (notify_one), and a waiter that returns from wait() because
// of N observes C: C happens-before that return. No lost wake-up: proven in the comments of
// prepare_wait() and notify_*(); tested by cross-thread and cross-process ping-pong.
// wait() may return spuriously (callers loop, as above).
//
// Cost: notify_*() with nobody announced is a seq_cst fence and one load: no store to the shared
// line, no system call. A futex syscall happens only when waiters_ != 0.
//
// Thread- and process-safety: every member may be called concurrently by any thread of any
// process that maps the object. Blocking: only wait()/wait_until() (after a bounded spin).
// Failures: wait() returns {} (notified or spurious); wait_until() returns {} or
//   errc::timed_out; nothing else fails.
// Deaths:
//   * a waiter killed between prepare_wait() and the end of wait()/cancel_wait() leaves waiters_
//     one too high for good: each later notify then bumps the epoch and makes one futex wake
//     syscall that may wake nobody. A cost, never a blocked or lost wake-up (a notifier never
//     waits for a waiter, and a stale count only makes notifiers do more, never less).
//   * a notifier killed inside notify: before its epoch increment nothing happened (as if it had
//     not notified yet); after it, parked waiters stay parked until a later notify or their
//     deadline, exactly as if the wake had come later. Waiters that had not parked yet see the
//     new epoch and return.
// fork(): a Scope::process event count keeps working (the child is one more participant). The
//   child's copy of a Scope::thread event count is a fresh object except that waiters_ may count
//   the parent's waiters (extra syscalls only).
// Epoch wrap-around: the epoch is 32 bits and moves only when a notify finds an announced waiter.
//   A waiter parks only if the epoch equals its key at the instant the kernel checks (futex
//   compare). If exactly k * 2^32 epoch bumps happen between its prepare_wait() and that check,
//   it parks although notified (ABA). That takes 4 billion notifies, each finding a waiter
//   announced, while this waiter is descheduled between two adjacent instructions: at ~10 ns
//   per notify, 40 s of nonstop notifying. Even then nothing blocks for good: this waiter is
//   counted in waiters_, so the next notify wakes it. Harmless in practice; not otherwise handled.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <system_error>
#include <type_traits>

#include "xproc/sync/scope.h"
#include "xproc/sys/error.h"

namespace xproc::sync {

inline constexpr std::uint32_t kEventCountDefaultSpinRounds = 4;

class EventCount {
 public:
  // The epoch a waiter saw when it announced itself.
  struct Key {
    std::uint32_t epoch;
  };

  // Scope::thread: the state of zero-filled memory.
  constexpr EventCount() noexcept = default;
  explicit EventCount(Scope scope,
                      std::uint32_t spin_rounds = kEventCountDefaultSpinRounds) noexcept
      : scope_(static_cast<std::uint32_t>(scope)), spin_rounds_(spin_rounds) {}
  EventCount(const EventCount&) = delete;
  EventCount& operator=(const EventCount&) = delete;

  // 1) Announces a waiter. Must be followed by a re-check of the condition, then exactly one of
  // cancel_wait() / wait() / wait_until().
  [[nodiscard]] Key prepare_wait() noexcept {
    // seq_cst RMW + seq_cst fence: the store-load of "announce, then re-check". The waiter's
    // (announce A; fence Y; re-check C) against the notifier's (change D; fence X; load of
    // waiters_ F): if F reads waiters_ before A, then X precedes A (X hb F, F
    // coherence-ordered before A), A precedes Y, and if C also missed D then Y precedes X:
    // a cycle in the single total order. So either F sees this waiter or C sees the change.
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // acquire: pairs with the release RMW of the epoch in notify_*(): a waiter whose key
    // already includes a notify sees that notifier's change in its re-check.
    return Key{epoch_.load(std::memory_order_acquire)};
  }

  // Withdraws the announcement (the re-check found the condition true).
  void cancel_wait() noexcept {
    // relaxed: only a counter for notifiers; a stale value costs a spare syscall at most.
    waiters_.fetch_sub(1, std::memory_order_relaxed);
  }

  // 3) Parks until a notify after prepare_wait() (returns at once if one already came).
  // Returns {} (notified, or spurious: re-check the condition).
  std::error_code wait(Key key) noexcept;
  // As wait(), but gives up at `deadline`: {} or errc::timed_out (still announced until then).
  [[nodiscard]] std::error_code wait_until(Key key, Deadline deadline) noexcept;
  template <class Rep, class Period>
  [[nodiscard]] std::error_code wait_for(Key key,
                                         std::chrono::duration<Rep, Period> timeout) noexcept {
    return wait_until(key, Clock::now() + std::chrono::ceil<Clock::duration>(timeout));
  }

  // The waiter protocol of the banner in one call: returns {} once ready() is true, or
  // errc::timed_out when `deadline` passes with ready() still false. ready() runs any number of
  // times, with nothing announced or announced (it must not wait on this event count itself).
  template <class Ready>
  [[nodiscard]] std::error_code await_until(Ready&& ready, Deadline deadline) noexcept {
    while (!ready()) {
      const Key key = prepare_wait();
      if (ready()) {
        cancel_wait();
        return {};
      }
      if (wait_until(key, deadline) == errc::timed_out) {
        return ready() ? std::error_code() : std::error_code(errc::timed_out);
      }
    }
    return {};
  }
  // As await_until() without a deadline.
  template <class Ready>
  void await(Ready&& ready) noexcept {
    while (!ready()) {
      const Key key = prepare_wait();
      if (ready()) {
        cancel_wait();
        return;
      }
      (void)wait(key);
    }
  }

  // Wakes one announced waiter (if any). No syscall when nobody announced.
  void notify_one() noexcept { notify(1); }
  // Wakes every announced waiter. No syscall when nobody announced.
  void notify_all() noexcept { notify(kWakeAll); }

  // Announced waiters, a snapshot including dead ones (diagnostics and tests).
  std::uint32_t waiters() const noexcept { return waiters_.load(std::memory_order_relaxed); }
  Scope scope() const noexcept { return static_cast<Scope>(scope_); }

 private:
  static constexpr int kWakeAll = 0x7fffffff;

  void notify(int count) noexcept {
    // seq_cst fence: orders the caller's change of the condition (D) before the load of
    // waiters_ (F); pairs with the fence in prepare_wait() (argument there).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // relaxed: ordered by the fence above.
    if (waiters_.load(std::memory_order_relaxed) == 0) return;
    notify_slow(count);
  }
  void notify_slow(int count) noexcept;
  std::error_code wait_impl(Key key, const Deadline* deadline) noexcept;

  // Layout (a wire format):
  // +0 epoch_: the futex word. Bumped (+1, wrapping) by a notify that finds waiters_ != 0.
  //    Every value is valid. A waiter parks while epoch_ == its key.
  std::atomic<std::uint32_t> epoch_{0};
  // +4 waiters_: waiters between prepare_wait() and the end of their wait. Any value is
  //    valid (a dead waiter leaves it too high: more syscalls, never fewer wake-ups).
  std::atomic<std::uint32_t> waiters_{0};
  // +8 scope_: Scope (0 thread, 1 process); other values are treated as process (safe: a
  //    shared futex also works for private memory).
  std::uint32_t scope_ = 0;
  // +12 spin_rounds_: detail::spin_until rounds watching epoch_ before parking.
  std::uint32_t spin_rounds_ = 0;

  sys::FutexScope futex_scope() const noexcept {
    return scope_ == 0 ? sys::FutexScope::process_private : sys::FutexScope::process_shared;
  }
};

static_assert(sizeof(EventCount) == 16);
static_assert(alignof(EventCount) == 4);
static_assert(std::is_standard_layout_v<EventCount>);

}  // namespace xproc::sync
