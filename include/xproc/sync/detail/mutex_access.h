#pragma once
// detail::MutexAccess: the hooks a condition variable needs on xproc::sync::Mutex's lock word
// (see mutex.h for the word's bit table). Not for users.
//
// Thread- and process-safety: as Mutex's members. CondVar::notify_* requeues its waiters onto
// word() with FUTEX_CMP_REQUEUE after mark_waiters() returned true, so the unlock that follows
// wakes one of them; a waiter woken there (or whose requeue target turned out unlocked) must
// acquire with lock_contended() so that it keeps WAITERS set for the others.
// Deaths: as Mutex::acquire()/release(): the dead owner's lock goes to the next acquirer with
// errc::owner_died (lock held).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <system_error>

#include "xproc/sync/mutex.h"
#include "xproc/sys/futex.h"

namespace xproc::sync::detail {

struct MutexAccess {
  // The lock word (the requeue target).
  static std::atomic<std::uint32_t>& word(Mutex& mutex) noexcept { return mutex.word_; }
  // The futex scope every futex call on word() must use (process_shared for every robust
  // mutex, whatever its Scope: the kernel wakes robust words with shared keys).
  static sys::FutexScope futex_scope(const Mutex& mutex) noexcept { return mutex.futex_scope(); }

  // For a robust mutex, how long a thread parked on word() may sleep before it re-examines
  // the word (wake-ups lost to a death, liveness backstop; see mutex.h); zero for a
  // non-robust one (sleep until woken). A condvar waiter requeued onto a robust mutex's word
  // should bound each sleep by this.
  static std::chrono::milliseconds park_bound(const Mutex& mutex) noexcept {
    if (!mutex.robust()) return std::chrono::milliseconds::zero();
    return mutex.backstop_ms_ == 0 ? kMutexDefaultBackstopInterval
                                   : std::chrono::milliseconds(mutex.backstop_ms_);
  }

  // Sets WAITERS on the word if it is locked (so the unlock that follows wakes a requeued
  // waiter). Returns false when the mutex is unlocked or not_recoverable (then the caller
  // wakes its waiters instead of requeueing them; they will see the state themselves).
  static bool mark_waiters(Mutex& mutex) noexcept;

  // Acquires with the contended path from the start (the caller was woken on the word): the
  // word keeps WAITERS after this acquire. Same results as Mutex::acquire().
  [[nodiscard]] static std::error_code lock_contended(Mutex& mutex) noexcept;

  // What a condition-variable wait must restore when it re-acquires.
  struct Saved {
    std::uint32_t depth = 0;  // recursion depth (1 for non-recursive kinds)
  };

  // Releases the mutex completely (all recursion levels), for a condition-variable wait.
  // not_owner when the caller does not hold it (then `saved` is untouched and nothing changed).
  // Releasing an inconsistent (owner-died, not repaired) mutex makes it not_recoverable, as
  // Mutex::release() does.
  [[nodiscard]] static std::error_code release_fully(Mutex& mutex, Saved& saved) noexcept;

  // Names the mutex in the calling thread's robust list_op_pending (no-op for a non-robust
  // mutex), for a condition-variable wait between release_fully() and reacquire(), which
  // clears it. If the thread dies meanwhile, the kernel's pending-op rule applies to the word:
  // when it holds no TID, one waiter on it is woken (the wake-up a requeued waiter killed
  // after being woken would otherwise take with it); when it holds a TID (someone else's:
  // ours was released) the kernel leaves it alone. Nothing else uses list_op_pending while
  // the thread is parked: glibc and Mutex set it only inside their own lock/unlock calls,
  // which run to completion and cannot be under way in a thread that is parked.
  static void set_pending(Mutex& mutex) noexcept;

  // Re-acquires after release_fully() and restores the recursion depth; `contended` = the
  // caller was woken on the lock word (requeued), so it must keep WAITERS set. Results as
  // Mutex::acquire(); on owner_died the lock is held with the saved depth.
  [[nodiscard]] static std::error_code reacquire(Mutex& mutex, Saved saved,
                                                 bool contended) noexcept;
};

}  // namespace xproc::sync::detail
