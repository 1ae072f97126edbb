#pragma once
// xproc::sync::Spinlock: a test-and-test-and-set spin lock on one 32-bit word, for threads of one
// process or processes sharing MAP_SHARED memory. Meets Lockable (lock, try_lock, unlock) and
// TimedLockable's try_lock_until / try_lock_for, so std::lock_guard / std::unique_lock work.
//
// ONLY for very short critical sections (a few dozen instructions, no system calls, no page
// faults): a waiter never sleeps in the kernel, it spins with `pause` and bounded exponential
// backoff (detail::cpu_relax, doubling up to kMaxPauses per round), and after kYieldAfterRounds
// rounds at that cap it also calls sched_yield() between rounds, so that a holder preempted on an
// oversubscribed machine gets the CPU back. Use Mutex for anything longer.
// No fairness, no owner, no recursion: unlock() by a thread that does not hold the lock releases
// it anyway (not detected).
//
// Thread- and process-safety: every member may be called concurrently by any thread of any
// process that maps the word. Blocking: lock() spins until it gets the lock; try_lock_until()
// spins until the deadline; try_lock() and unlock() never wait.
// Failures: none reported: lock() always succeeds eventually or spins forever (see Deaths);
//   try_lock() / try_lock_until() return false when they could not take it.
// Deaths: a holder killed inside the critical section leaves the lock held for good (no futex,
//   no owner recorded, nothing to tell a survivor who held it). Every later lock() spins forever;
//   callers that may face dead peers use try_lock_until(deadline) to bound the wait, and recover
//   by other means (a process registry, re-creating the segment). A waiter killed while spinning
//   leaves nothing behind.
// fork(): the child's copy (Scope::thread memory) keeps the parent's state of the moment: a lock
//   held by another parent thread stays held in the child. In shared memory it keeps working.
// Scope: accepted for uniformity with the other primitives and not stored: the lock never
//   touches a futex, so private and shared memory behave the same.
// Layout: word_ (4 bytes), 0 = free, anything else = held (1 is written; other values, e.g.
//   garbage from a peer, read as held).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <type_traits>

#include "xproc/sync/detail/tsan.h"
#include "xproc/sync/scope.h"

namespace xproc::sync {

class Spinlock {
 public:
  static constexpr std::uint32_t kMaxPauses = 128;
  static constexpr std::uint32_t kYieldAfterRounds = 16;

  constexpr Spinlock() noexcept = default;
  explicit Spinlock(Scope) noexcept {}
  Spinlock(const Spinlock&) = delete;
  Spinlock& operator=(const Spinlock&) = delete;

  void lock() noexcept {
    detail::tsan_pre_lock(this, 0);
    if (!acquire_once()) lock_slow(nullptr);
    detail::tsan_post_lock(this, 0);
  }
  bool try_lock() noexcept {
    detail::tsan_pre_lock(this, detail::kTsanTryLock);
    const bool taken = acquire_once();
    detail::tsan_post_lock(
        this, taken ? detail::kTsanTryLock : detail::kTsanTryLock | detail::kTsanTryLockFailed);
    return taken;
  }
  // Spins until it gets the lock (true) or the deadline passes (false). A past deadline makes
  // one attempt.
  bool try_lock_until(Deadline deadline) noexcept {
    detail::tsan_pre_lock(this, detail::kTsanTryLock);
    const bool taken = acquire_once() || lock_slow(&deadline);
    detail::tsan_post_lock(
        this, taken ? detail::kTsanTryLock : detail::kTsanTryLock | detail::kTsanTryLockFailed);
    return taken;
  }
  template <class Clock2, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock2, Duration>& deadline) noexcept {
    return try_lock_for(deadline - Clock2::now());
  }
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) noexcept {
    return try_lock_until(Clock::now() + std::chrono::ceil<Clock::duration>(timeout));
  }
  void unlock() noexcept {
    detail::tsan_pre_unlock(this, 0);
    // release: publishes the critical section to the next acquire_once() (acquire exchange).
    word_.store(0, std::memory_order_release);
    detail::tsan_post_unlock(this, 0);
  }
  // A snapshot (relaxed): whether somebody holds the lock now.
  bool is_locked() const noexcept { return word_.load(std::memory_order_relaxed) != 0; }

 private:
  bool acquire_once() noexcept {
    // acquire: pairs with the release store in unlock(): the previous critical section
    // happens-before ours. An exchange (not a CAS): one locked instruction either way.
    return word_.exchange(1, std::memory_order_acquire) == 0;
  }
  // Test-and-test-and-set with backoff; false only when the deadline passed.
  bool lock_slow(const Deadline* deadline) noexcept;

  std::atomic<std::uint32_t> word_{0};
};

static_assert(sizeof(Spinlock) == 4);
static_assert(alignof(Spinlock) == 4);
static_assert(std::is_standard_layout_v<Spinlock>);

}  // namespace xproc::sync
