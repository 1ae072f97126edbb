#pragma once
// xproc::sync::CondVar: a condition variable on one 32-bit futex word, for threads of one process
// (Scope::thread) or for processes sharing MAP_SHARED memory (Scope::process).
//
// Two paths:
//   * with xproc::sync::Mutex: the error-code API (wait, wait_until, wait_for, predicate forms,
//     returning std::error_code) and the std-style members taking std::unique_lock<Mutex>&
//     (throw as Mutex::lock does). notify_all(Mutex&) moves the waiters onto the mutex word
//     (FUTEX_CMP_REQUEUE) instead of waking them all, so they run one at a time as the mutex
//     frees up, without a stampede.
//   * generic: any BasicLockable (std::mutex, std::unique_lock<std::mutex>, user locks), with
//     std::condition_variable_any's members and results. Its waiters are always woken, never
//     requeued.
// notify_one() and notify_all() take no lock; notify_all() WAKES every waiter (no requeue: it
// does not know the mutex). notify_all(Mutex& m) requeues onto m when it can prove that every
// thread that ever waited on this condvar used m through the Mutex path (the condvar records the
// mutex's offset from itself, an integer that is only compared, never dereferenced: see
// lock_tag_ below); otherwise it wakes all. Precondition (as for std::condition_variable): all
// concurrent waiters use the same mutex; m is that mutex.
// Mesa semantics: a woken waiter always returns (spurious returns are allowed; callers loop on
// their predicate, which the predicate overloads do for them).
//
// Thread- and process-safety: every member may be called concurrently from any thread of any
// process that maps the condvar. Blocking: the wait members park on the futex word (after a
// short bounded spin) and then re-acquire the lock; notify members never block.
// Failures (Mutex path, error-code API): {} = woken (or spurious), the mutex held;
//   timed_out = the deadline passed, the mutex held; owner_died = the mutex was re-acquired
//   after its previous owner died (held, inconsistent: repair the data, make_consistent());
//   not_recoverable = the mutex is unusable, NOT held; not_owner = the caller did not hold the
//   mutex, nothing happened. Waiting while the mutex is inconsistent (owner_died, not repaired)
//   releases it and so makes it not_recoverable, as Mutex::release() does: repair first.
// Deaths:
//   * a waiter killed inside wait leaves `waiters_` counting it: every later notify then makes
//     one futex syscall that may wake nobody (a cost, never a lost or blocked wake-up: the
//     count only decides whether a notifier calls the kernel, and only a waiter decrements its
//     own increment, so the count can be too high, never too low for a live waiter; the kernel
//     removes a dead thread from the futex queue, so a wake goes to a live one). A notifier
//     never waits for a waiter. Killed while holding the re-acquired mutex: owner_died below.
//   * a notifier killed inside notify: before its seq increment nothing happened; after it,
//     waiters that had parked stay parked until a later notify or their deadline (exactly as if
//     the notify had come later); a notify_all killed between its requeue and its return has
//     already done all its work (the requeue is one system call).
//   * the mutex owner dying: the Mutex's robust path; the waiter that re-acquires gets
//     owner_died.
//   * a waiter requeued onto the mutex word, woken there by an unlock and killed before it
//     acquires: for a robust mutex the waiter names the mutex in its robust list_op_pending
//     from its release in wait until it has re-acquired (detail::MutexAccess::set_pending),
//     so the kernel, finding the word without a TID at the death, wakes the next waiter on
//     it (measured: the survivor runs ~0.1 ms after the kill instead of after a recheck
//     slice; tests/crash/cond_var_pending_crash_test.cc). A waiter killed while parked on
//     seq_ thereby costs at most one spurious wake-up of a mutex waiter. As a backstop
//     (wake-ups lost otherwise: a notify_one wakee killed before it re-examines), waiters on a
//     process-shared robust mutex park, on seq_ and on the mutex word while re-acquiring, for
//     at most kRequeueRecheck at a time and then re-examine the state. Non-robust mutexes have
//     no such protection (they promise none against deaths).
// Lifetime: as for std::condition_variable, the condvar may be destroyed once every waiter has
// been notified, even if some have not returned from wait yet. A waiter stops touching the
// condvar before it re-acquires the lock (its last access is the release decrement of
// waiters_), and the destructor waits for waiters_ to reach 0 (detail::quiesce: at most
// detail::kQuiesceBound), so a destroyer holding the mutex does not block them. A waiter never
// notified (a caller bug) or killed inside a wait (Scope::process) costs the destructor that
// bound. The C API's xproc_cond_destroy answers EBUSY instead of waiting it out twice.
// fork(): the child's copy of a Scope::thread condvar is unusable if the parent had waiters (as
// with pthread condvars); a Scope::process condvar keeps working across fork (the child is one
// more process mapping it).
// Limits: a waiter that sleeps through exactly 2^32 notifies in the window between reading seq_
// and parking misses one wake-up (ABA on the futex word; needs 4 billion notifies in microseconds).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <system_error>
#include <type_traits>

#include "xproc/sync/mutex.h"
#include "xproc/sync/scope.h"
#include "xproc/sys/error.h"

namespace xproc::sync {

inline constexpr std::uint32_t kCondVarDefaultSpinRounds = 4;

struct CondVarOptions {
  // Rounds of detail::spin_until (pause, doubling) watching seq_ before parking; 0 = park at
  // once. The default (~30 pauses, about a microsecond) only catches a notify that is already
  // on its way; a futex wake-up costs several microseconds.
  std::uint32_t spin_rounds = kCondVarDefaultSpinRounds;
};

class CondVar {
 public:
  // Scope::thread: the state of zero-filled memory.
  constexpr CondVar() noexcept = default;
  explicit CondVar(Scope scope, CondVarOptions options = {}) noexcept;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;
  // Waits (bounded) for woken waiters still inside a wait to leave: see "Lifetime" above.
  ~CondVar();

  // ---- notify (no lock needed; cheap when nobody waits: one RMW and one load) ----
  void notify_one() noexcept;
  // Wakes every waiter.
  void notify_all() noexcept;
  // Requeues the waiters onto `mutex`'s word (wakes one), or wakes all (see the banner).
  void notify_all(Mutex& mutex) noexcept;

  // ---- Mutex path, error-code API (see the banner for the results) ----
  [[nodiscard]] std::error_code wait(Mutex& mutex) noexcept;
  [[nodiscard]] std::error_code wait_until(Mutex& mutex, Deadline deadline) noexcept;
  template <class R, class P>
  [[nodiscard]] std::error_code wait_for(Mutex& mutex, const std::chrono::duration<R, P>& timeout) {
    return wait_until(mutex, Clock::now() + std::chrono::ceil<Clock::duration>(timeout));
  }
  // Loop until pred() (evaluated with the mutex held). Returns {} once pred() holds;
  // timed_out when the deadline passed with pred() still false; any other error at once
  // (owner_died with the mutex held: pred() is not evaluated on inconsistent data).
  template <class Pred>
  [[nodiscard]] std::error_code wait(Mutex& mutex, Pred pred);
  template <class Pred>
  [[nodiscard]] std::error_code wait_until(Mutex& mutex, Deadline deadline, Pred pred);
  template <class R, class P, class Pred>
  [[nodiscard]] std::error_code wait_for(Mutex& mutex, const std::chrono::duration<R, P>& timeout,
                                         Pred pred) {
    return wait_until(mutex, Clock::now() + std::chrono::ceil<Clock::duration>(timeout),
                      std::move(pred));
  }

  // ---- std::condition_variable_any members: any BasicLockable ----
  // For std::unique_lock<Mutex> (and Mutex itself) these take the Mutex path and throw:
  // OwnerDied (lock held), std::system_error(not_owner) (lock not held by the caller; nothing
  // happened), std::system_error(not_recoverable and others) with the lock NOT held (a
  // unique_lock is released first, so it does not unlock again).
  template <class Lock>
  void wait(Lock& lock);
  template <class Lock, class Pred>
  void wait(Lock& lock, Pred pred) {
    while (!pred()) wait(lock);
  }
  template <class Lock, class C, class D>
  std::cv_status wait_until(Lock& lock, const std::chrono::time_point<C, D>& deadline);
  template <class Lock, class C, class D, class Pred>
  bool wait_until(Lock& lock, const std::chrono::time_point<C, D>& deadline, Pred pred) {
    while (!pred()) {
      if (wait_until(lock, deadline) == std::cv_status::timeout) return pred();
    }
    return true;
  }
  template <class Lock, class R, class P>
  std::cv_status wait_for(Lock& lock, const std::chrono::duration<R, P>& timeout) {
    return wait_until(lock, Clock::now() + std::chrono::ceil<Clock::duration>(timeout));
  }
  template <class Lock, class R, class P, class Pred>
  bool wait_for(Lock& lock, const std::chrono::duration<R, P>& timeout, Pred pred) {
    return wait_until(lock, Clock::now() + std::chrono::ceil<Clock::duration>(timeout),
                      std::move(pred));
  }

  Scope scope() const noexcept { return static_cast<Scope>(scope_); }
  // Threads inside a wait now, dead ones included (acquire: once it reads 0, every access a
  // leaving waiter made to the condvar happens-before the caller's next step; pairs with the
  // release decrement in retire()). Also: notifies so far (mod 2^32).
  std::uint32_t waiter_count() const noexcept { return waiters_.load(std::memory_order_acquire); }
  std::uint32_t sequence() const noexcept {
    return seq_.load(std::memory_order_relaxed);  // relaxed: a snapshot, orders nothing
  }
  std::uint32_t requeue_count() const noexcept {
    return requeues_.load(std::memory_order_relaxed);  // relaxed: a snapshot, orders nothing
  }

  // The longest a waiter of a Scope::process wait on a robust mutex sleeps before it
  // re-examines the state (on seq_, or on the mutex word while it re-acquires): bounds the
  // delay a killed, requeued-and-woken waiter can cause (see Deaths in the banner).
  static constexpr std::chrono::milliseconds kRequeueRecheck{100};

 private:
  // What a waiter read before parking.
  struct Ticket {
    std::uint32_t seq;
    std::uint32_t requeues;
  };
  // lock_tag_ values: 0 = no waiter yet; kMixedLocks = waiters used different mutexes or the
  // generic path (sticky: notify_all(Mutex&) then wakes all, forever); otherwise
  // (mutex address - condvar address) as a uint64 (never 0 or 1: both are 4-byte aligned and
  // distinct).
  static constexpr std::uint64_t kNoLock = 0;
  static constexpr std::uint64_t kMixedLocks = 1;

  std::uint64_t tag_of(const Mutex& mutex) const noexcept {
    return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&mutex) -
                                      reinterpret_cast<std::uintptr_t>(this));
  }
  void record_lock(std::uint64_t tag) noexcept;
  Ticket announce(std::uint64_t tag) noexcept;
  void retire() noexcept;
  // Parks until seq_ moves from ticket.seq (or a wake-up, spurious or not) or the deadline.
  // {} = woken or seq_ moved; timed_out; recheck_slices = wake every kRequeueRecheck to see
  // whether a requeue happened (then return {}).
  std::error_code park(Ticket ticket, const Deadline* deadline, bool recheck_slices) noexcept;
  std::error_code wait_mutex(Mutex& mutex, const Deadline* deadline) noexcept;
  // Whether a requeue may have moved the holder of `ticket` onto the mutex word.
  bool maybe_requeued(Ticket ticket) const noexcept;
  std::error_code reacquire_in_slices(Mutex& mutex, std::uint32_t depth, bool contended) noexcept;
  sys::FutexScope futex_scope() const noexcept {
    return sync::futex_scope(static_cast<Scope>(scope_));
  }
  std::uint32_t spin_rounds() const noexcept {
    return spin_setting_ == 0 ? kCondVarDefaultSpinRounds : spin_setting_ - 1u;
  }
  template <class Lock>
  std::cv_status wait_generic(Lock& lock, const Deadline* deadline);
  template <class Lock>
  static Mutex* xproc_mutex_of(Lock& lock);
  std::cv_status std_result(std::error_code ec, std::unique_lock<Mutex>* lock);

  template <class C, class D>
  static Deadline to_deadline(const std::chrono::time_point<C, D>& deadline) {
    if constexpr (std::is_same_v<C, Clock>) {
      return std::chrono::time_point_cast<Clock::duration>(deadline);
    } else {
      return Clock::now() + std::chrono::ceil<Clock::duration>(deadline - C::now());
    }
  }

  // Layout (a wire format; static_asserts in src/sync/cond_var.cc):
  // +0 seq_: the futex word waiters park on. Every notify adds 1 (mod 2^32); no other bits.
  //    A waiter that read value s parks with futex_wait(seq_, s): a notify after that read
  //    makes the park return at once (would_block) or wakes it.
  std::atomic<std::uint32_t> seq_{0};
  // +4 waiters_: threads between announce() and retire() (counted before they release the
  //    lock, uncounted after they wake). A notifier makes a futex call only when it is > 0.
  //    Dead waiters stay counted (spare syscalls only).
  std::atomic<std::uint32_t> waiters_{0};
  // +8 requeues_: notify_all(Mutex&) calls that (may have) requeued waiters onto the mutex word.
  // +12 requeue_seq_: the seq_ value the latest of them requeued against (stored before
  //    requeues_ is bumped). A waiter may have been moved onto the mutex word iff requeues_
  //    changed since its ticket, or requeue_seq_ equals its ticket's seq (a requeue bumped
  //    requeues_ before the waiter took its ticket but moved it after it parked); such a
  //    waiter re-acquires with the contended path (keeps WAITERS set for the others) and
  //    must not park on seq_ again. False positives only cost a spare wake syscall.
  std::atomic<std::uint32_t> requeues_{0};
  std::atomic<std::uint32_t> requeue_seq_{0};
  std::uint8_t scope_ = 0;         // +16 Scope
  std::uint8_t spin_setting_ = 0;  // +17 0 = default spin rounds, else rounds + 1 (capped 254)
  [[maybe_unused]] std::uint16_t reserved0_ = 0;  // +18
  [[maybe_unused]] std::uint32_t reserved1_ = 0;  // +20
  // +24 lock_tag_: which mutex the waiters use (see kNoLock/kMixedLocks): an integer compared
  //    with tag_of(m) by notify_all(m), never turned back into an address.
  std::atomic<std::uint64_t> lock_tag_{0};
};

// ---- templates ----

template <class Pred>
std::error_code CondVar::wait(Mutex& mutex, Pred pred) {
  while (!pred()) {
    if (std::error_code ec = wait(mutex)) return ec;
  }
  return {};
}

template <class Pred>
std::error_code CondVar::wait_until(Mutex& mutex, Deadline deadline, Pred pred) {
  while (!pred()) {
    if (std::error_code ec = wait_until(mutex, deadline)) {
      if (ec == errc::timed_out) return pred() ? std::error_code() : ec;
      return ec;
    }
  }
  return {};
}

template <class Lock>
Mutex* CondVar::xproc_mutex_of(Lock& lock) {
  if constexpr (std::is_same_v<Lock, std::unique_lock<Mutex>>) {
    if (!lock.owns_lock()) throw std::system_error(make_error_code(errc::not_owner));
    return lock.mutex();
  } else if constexpr (std::is_same_v<Lock, Mutex>) {
    return &lock;
  } else {
    return nullptr;
  }
}

template <class Lock>
void CondVar::wait(Lock& lock) {
  if constexpr (std::is_same_v<Lock, std::unique_lock<Mutex>> || std::is_same_v<Lock, Mutex>) {
    Mutex* mutex = xproc_mutex_of(lock);
    std::unique_lock<Mutex>* unique = nullptr;
    if constexpr (std::is_same_v<Lock, std::unique_lock<Mutex>>) unique = &lock;
    (void)std_result(wait_mutex(*mutex, nullptr), unique);
  } else {
    (void)wait_generic(lock, nullptr);
  }
}

template <class Lock, class C, class D>
std::cv_status CondVar::wait_until(Lock& lock, const std::chrono::time_point<C, D>& deadline) {
  const Deadline steady = to_deadline(deadline);
  if constexpr (std::is_same_v<Lock, std::unique_lock<Mutex>> || std::is_same_v<Lock, Mutex>) {
    Mutex* mutex = xproc_mutex_of(lock);
    std::unique_lock<Mutex>* unique = nullptr;
    if constexpr (std::is_same_v<Lock, std::unique_lock<Mutex>>) unique = &lock;
    return std_result(wait_mutex(*mutex, &steady), unique);
  } else {
    return wait_generic(lock, &steady);
  }
}

template <class Lock>
std::cv_status CondVar::wait_generic(Lock& lock, const Deadline* deadline) {
  const Ticket ticket = announce(kMixedLocks);
  try {
    lock.unlock();
  } catch (...) {
    retire();
    throw;
  }
  const std::error_code ec = park(ticket, deadline, false);
  retire();     // the last access to the condvar (see "Lifetime")
  lock.lock();  // a throw here leaves the lock unlocked, as the exception says
  return ec == errc::timed_out ? std::cv_status::timeout : std::cv_status::no_timeout;
}

}  // namespace xproc::sync
