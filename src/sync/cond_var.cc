#include "xproc/sync/cond_var.h"

#include <climits>
#include <cstddef>
#include <type_traits>

#include "xproc/sync/detail/mutex_access.h"
#include "xproc/sync/detail/quiesce.h"
#include "xproc/sync/detail/spin.h"
#include "xproc/sys/futex.h"

namespace xproc::sync {

static_assert(std::is_standard_layout_v<CondVar>);
static_assert(sizeof(CondVar) == 32);
static_assert(alignof(CondVar) == 8);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

CondVar::CondVar(Scope scope, CondVarOptions options) noexcept
    : scope_(static_cast<std::uint8_t>(scope)),
      spin_setting_(
          static_cast<std::uint8_t>(options.spin_rounds >= 254 ? 255 : options.spin_rounds + 1)) {}

void CondVar::record_lock(std::uint64_t tag) noexcept {
  // seq_cst (load and CAS): the record must precede announce()'s waiters_ increment in the
  // single total order, so that a notify_all(Mutex&) that counts this waiter (or whose seq_
  // increment this waiter's park misses) also sees its tag; pairs with the seq_cst load there.
  std::uint64_t current = lock_tag_.load(std::memory_order_seq_cst);
  while (current != tag && current != kMixedLocks) {
    const std::uint64_t desired = current == kNoLock ? tag : kMixedLocks;
    if (lock_tag_.compare_exchange_weak(current, desired, std::memory_order_seq_cst)) return;
  }
}

CondVar::Ticket CondVar::announce(std::uint64_t tag) noexcept {
  Ticket ticket{};
  // relaxed: the caller holds the lock; a notify whose predicate change we did not see runs
  // after our unlock, so its increment follows this read in seq_'s modification order (read-
  // write coherence through the lock's happens-before). A stale value only causes an early return.
  ticket.seq = seq_.load(std::memory_order_relaxed);
  // acquire: pairs with the release increment in notify_all(Mutex&); a requeue after this read
  // shows up as a change when the waiter re-reads after its park.
  ticket.requeues = requeues_.load(std::memory_order_acquire);
  record_lock(tag);
  // seq_cst: the store-load pair with notify_*: (waiter) count self, then futex_wait reads
  // seq_  vs  (notifier) increment seq_, then read waiters_. At least one side sees the other.
  waiters_.fetch_add(1, std::memory_order_seq_cst);
  return ticket;
}

CondVar::~CondVar() {
  (void)detail::quiesce([this] { return waiter_count() == 0; });
}

void CondVar::retire() noexcept {
  // release: the waiter's last access to the condvar; its earlier reads of it happen-before a
  // destroyer's acquire load of 0 (waiter_count()). For notifiers only a hint (a stale non-zero
  // value costs them a spare syscall; a waiter still parked has not retired).
  waiters_.fetch_sub(1, std::memory_order_release);
}

bool CondVar::maybe_requeued(Ticket ticket) const noexcept {
  // acquire (both): pair with the release increment of requeues_ in notify_all(Mutex&), which
  // follows its store to requeue_seq_ and precedes the requeue system call (the kernel's futex
  // bucket lock orders that call before the wake-up that returned us from our park).
  if (requeues_.load(std::memory_order_acquire) != ticket.requeues) return true;
  return requeue_seq_.load(std::memory_order_acquire) == ticket.seq;
}

std::error_code CondVar::park(Ticket ticket, const Deadline* deadline,
                              bool recheck_slices) noexcept {
  // seq_cst: after announce()'s seq_cst increment of waiters_: if a notifier's waiters_ load
  // missed us, its seq_ increment precedes this load in the total order and we see it here.
  auto moved = [&] { return seq_.load(std::memory_order_seq_cst) != ticket.seq; };
  if (detail::spin_until(moved, spin_rounds())) return {};
  for (;;) {
    Deadline slice_end{};
    const Deadline* until = deadline;
    if (recheck_slices) {
      slice_end = Clock::now() + kRequeueRecheck;
      if (deadline == nullptr || slice_end < *deadline) until = &slice_end;
    }
    const std::error_code ec = until == nullptr
                                   ? sys::futex_wait(seq_, ticket.seq, futex_scope())
                                   : sys::futex_wait(seq_, ticket.seq, futex_scope(), *until);
    if (!ec || ec == errc::would_block) return {};  // woken (maybe spuriously) or seq_ moved
    if (ec != errc::timed_out) return {};  // unexpected kernel answer: report a spurious wake-up
    if (until == deadline) return ec;      // the caller's deadline passed
    // A recheck slice ended. If a requeue may have moved us we were parked on the mutex word
    // (and must not park on seq_ again: that notify_all's wake-up would be lost): return and
    // re-acquire by the mutex's path instead of sleeping there.
    if (maybe_requeued(ticket) || moved()) return {};
  }
}

// TSan: release_fully() annotates the release of every recursion level and reacquire() (or
// reacquire_in_slices()'s relocks) the acquisition of all of them, so TSan's count of a
// recursive mutex's levels matches the mutex's across the wait.
std::error_code CondVar::wait_mutex(Mutex& mutex, const Deadline* deadline) noexcept {
  const Ticket ticket = announce(mutex.scope() == scope() ? tag_of(mutex) : kMixedLocks);
  detail::MutexAccess::Saved saved;
  if (std::error_code ec = detail::MutexAccess::release_fully(mutex, saved)) {
    retire();
    return ec;  // not_owner: nothing changed
  }
  // Robust mutex: if this thread dies from here until reacquire() (which clears it), the
  // kernel wakes a waiter on the mutex word when the word holds no TID, so a wake-up from the
  // mutex's unlock that a requeued waiter takes with it is passed on (see mutex_access.h).
  detail::MutexAccess::set_pending(mutex);
  const bool slices = scope() == Scope::process && mutex.robust();
  const std::error_code parked = park(ticket, deadline, slices);
  // We may have been woken on the mutex word: keep WAITERS set for the others. Read before
  // retire(), the last access to the condvar (see "Lifetime" in cond_var.h).
  const bool contended = !parked && maybe_requeued(ticket);
  retire();
  std::error_code ec = slices ? reacquire_in_slices(mutex, saved.depth, contended)
                              : detail::MutexAccess::reacquire(mutex, saved, contended);
  if (ec) return ec;  // owner_died (held), not_recoverable, corrupt_state (not held)
  return parked;      // {} or timed_out, the mutex held
}

// Process-shared robust mutexes: a waiter woken on the mutex word (requeued) by an unlock and
// killed before it acquires takes that wake-up with it, and the kernel's robust list cannot
// help (the dead thread had no pending operation on the word). So every condvar waiter that
// re-acquires such a mutex re-examines the word at least every kRequeueRecheck instead of
// sleeping on it without bound; the WAITERS bit is set again after acquiring when the caller
// may have been requeued, and recursion levels are restored by relocking.
std::error_code CondVar::reacquire_in_slices(Mutex& mutex, std::uint32_t depth,
                                             bool contended) noexcept {
  std::error_code ec;
  do {
    ec = mutex.acquire_until(Clock::now() + kRequeueRecheck);
  } while (ec == errc::timed_out);
  if (ec && ec != errc::owner_died) return ec;  // not held
  if (contended) (void)detail::MutexAccess::mark_waiters(mutex);
  for (std::uint32_t level = 1; level < depth; ++level) {
    if (mutex.acquire()) break;  // recursive relock by the owner: cannot fail below the limit
  }
  return ec;
}

std::error_code CondVar::wait(Mutex& mutex) noexcept {
  return wait_mutex(mutex, nullptr);
}

std::error_code CondVar::wait_until(Mutex& mutex, Deadline deadline) noexcept {
  return wait_mutex(mutex, &deadline);
}

void CondVar::notify_one() noexcept {
  // seq_cst: the notifier half of the store-load pair (see announce()): increment, then read
  // waiters_. Also a release of nothing in particular: the data is protected by the mutex.
  seq_.fetch_add(1, std::memory_order_seq_cst);
  // seq_cst: pairs with the seq_cst increment of waiters_ in announce().
  if (waiters_.load(std::memory_order_seq_cst) == 0) return;
  (void)sys::futex_wake(seq_, 1, futex_scope());
}

void CondVar::notify_all() noexcept {
  // seq_cst, seq_cst: as in notify_one().
  seq_.fetch_add(1, std::memory_order_seq_cst);
  if (waiters_.load(std::memory_order_seq_cst) == 0) return;
  (void)sys::futex_wake(seq_, INT_MAX, futex_scope());
}

void CondVar::notify_all(Mutex& mutex) noexcept {
  // seq_cst, seq_cst: as in notify_one().
  std::uint32_t seq = seq_.fetch_add(1, std::memory_order_seq_cst) + 1;
  if (waiters_.load(std::memory_order_seq_cst) == 0) return;
  // seq_cst: pairs with record_lock()'s seq_cst CAS: a waiter counted above, or one whose park
  // will see the increment above, recorded its tag before it counted itself.
  const bool same_mutex = lock_tag_.load(std::memory_order_seq_cst) == tag_of(mutex) &&
                          detail::MutexAccess::futex_scope(mutex) == futex_scope();
  if (!same_mutex) {
    (void)sys::futex_wake(seq_, INT_MAX, futex_scope());
    return;
  }
  // WAITERS on a locked word: the owner's unlock wakes the first requeued waiter; each woken
  // waiter acquires with the contended path (WAITERS kept), so its unlock wakes the next.
  if (!detail::MutexAccess::mark_waiters(mutex)) {
    (void)sys::futex_wake(seq_, INT_MAX, futex_scope());  // unlocked: nobody to queue behind
    return;
  }
  for (;;) {
    // relaxed: published by the release increment below. The seq_ value this requeue moves
    // the waiters of (see maybe_requeued()).
    requeue_seq_.store(seq, std::memory_order_relaxed);
    // release: precedes the requeue system call; a waiter reading it after its wake-up
    // (acquire) knows it may have been moved onto the mutex word.
    requeues_.fetch_add(1, std::memory_order_release);
    // Wake one (it runs when it gets the mutex, acquiring contended: WAITERS stays set even if
    // the mutex is unlocked by now), move the rest onto the mutex word.
    Result<int> moved = sys::futex_cmp_requeue(seq_, seq, 1, INT_MAX,
                                               detail::MutexAccess::word(mutex), futex_scope());
    if (moved || moved.error() != errc::would_block) return;
    // seq_ moved on (another notify): requeue against its new value. relaxed: only the
    // expected value for the kernel's compare; a stale value just retries.
    seq = seq_.load(std::memory_order_relaxed);
  }
}

std::cv_status CondVar::std_result(std::error_code ec, std::unique_lock<Mutex>* lock) {
  if (!ec) return std::cv_status::no_timeout;
  if (ec == errc::timed_out) return std::cv_status::timeout;
  if (ec == errc::owner_died) throw OwnerDied();                        // the lock is held
  if (ec != errc::not_owner && lock != nullptr) (void)lock->release();  // not held any more
  throw std::system_error(ec);
}

}  // namespace xproc::sync
