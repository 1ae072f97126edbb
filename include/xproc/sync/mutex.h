#pragma once
// xproc::sync::Mutex: a mutual-exclusion lock on one 32-bit futex word, for threads of one
// process (Scope::thread) or for processes sharing MAP_SHARED memory (Scope::process).
//
// Kinds (MutexOptions::kind):
//   normal          a blocking relock by the owner reports errc::deadlock instead of hanging
//                   (detected in the slow path only, so it costs the fast path nothing); unlock
//                   by a thread that does not own it is not checked unless the mutex is robust
//                   (as std::mutex: a bug).
//   error_checking  relock -> errc::deadlock, unlock/make_consistent by a non-owner ->
//                   errc::not_owner: always reported, never undefined.
//   recursive       the owner may relock; a depth counter counts; 2^32-1 levels ->
//                   errc::limit_reached; the lock is released at the last release.
// Robustness (MutexOptions::robustness): `automatic` = robust for Scope::process, not robust
// for Scope::thread. A robust mutex whose owner thread dies (thread exit, SIGKILL, exec, any
// death: the kernel walks the owner's robust list) goes to the next acquirer with
// errc::owner_died and the lock HELD; the data it protects may be half-updated. The new owner
// repairs it and calls make_consistent(); releasing without that leaves the mutex
// not_recoverable for good (every later acquire fails with errc::not_recoverable; parked
// waiters are all woken to see it). Deaths the kernel's list cannot report (over 2048 held
// locks, a node the kernel cannot reach) are caught by the participant-table backstop when
// the owner's and the waiter's processes are attached to one participant table: a parked
// waiter re-checks the owner's liveness every backstop interval (default 100 ms). Robust
// words always use shared futex keys (the kernel's wake at a death is a shared FUTEX_WAKE).
// Precondition: release every robust lock of a mapping before unmapping it (its node is
// linked into the thread's robust list, as a glibc robust mutex's is).
// A non-robust mutex whose owner dies stays locked forever (as a plain pthread mutex).
// docs/decisions/0001-robust-ownership.md has the design and the crash protocol step by step.
//
// Thread- and process-safety: every member may be called concurrently from any thread of any
// process that maps the mutex (Scope::process) or of its one process (Scope::thread).
// Blocking: lock(), acquire(), acquire_until() and try_lock_until/for() spin a bounded while
// (MutexOptions::spin_rounds; 0 = park at once), then park on the futex word.
// Failures: the error-code API returns [[nodiscard]] std::error_code of xproc::errc:
//   owner_died (lock held: repair, make_consistent()), not_recoverable, deadlock, not_owner,
//   limit_reached, timed_out, would_block, invalid_argument, corrupt_state.
// The std Lockable/TimedLockable members keep std semantics and throw: OwnerDied (a
// std::system_error with errc::owner_died, thrown WITH THE LOCK HELD) or std::system_error.
// Death inside an operation: see the crash protocol in docs/decisions/0001-robust-ownership.md;
// in short, a robust lock whose owner dies at any instant of lock or unlock is either free or
// marked owner-died by the kernel; a wake-up lost to such a death (a woken waiter killed
// before it re-acquired, an unlocker killed before its FUTEX_WAKE) is recovered by the parked
// waiters' re-check within one backstop interval; survivors never wait for the dead.
// fork(): the child does not own any lock its parent's threads hold (its thread id and
// ownership token differ): unlocking one in the child is errc::not_owner (error-checking,
// recursive and robust kinds). A Scope::thread mutex held at fork() stays locked in the
// child's copy for ever (as with pthread mutexes); a Scope::process mutex held by the parent
// is released when the parent unlocks it.
//
// Lock word (sys::kFutex* bits; the kernel's robust-futex format, for every kind and scope):
//   bits 0-29  TID of the owner thread (sys::this_thread_id()), 0 = unlocked
//   bit 30     OWNER_DIED: the owner died (set by the kernel or the backstop); kept in the
//              word while the next owner holds the lock inconsistent, until make_consistent()
//   bit 31     WAITERS: a thread may be parked on the word; unlock must FUTEX_WAKE
//   0x7fffffff (TID all ones | OWNER_DIED) = NOT_RECOVERABLE: permanent, never a real TID
//              (the kernel's PID limit is 2^22), so the kernel's walk never touches it.
// Owner identity: "the caller owns" = word TID == caller's TID && owner_token_ == caller's
// sys::this_thread_token(): TIDs collide across PID namespaces, tokens do not.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <system_error>
#include <type_traits>

#include "xproc/sync/detail/tsan.h"
#include "xproc/sync/scope.h"
#include "xproc/sys/error.h"
#include "xproc/sys/futex.h"
#include "xproc/sys/thread_id.h"

namespace xproc::sync {

class Mutex;

namespace detail {
struct MutexAccess;
struct MutexLayout;
}  // namespace detail

enum class MutexKind : std::uint8_t { normal = 0, error_checking = 1, recursive = 2 };

// Whether the kernel's robust list and the liveness backstop report a dead owner.
// automatic: robust for Scope::process, not robust for Scope::thread.
enum class Robustness : std::uint8_t { automatic = 0, robust = 1, not_robust = 2 };

inline constexpr std::uint32_t kMutexDefaultSpinRounds = 12;
inline constexpr std::chrono::milliseconds kMutexDefaultBackstopInterval{100};

struct MutexOptions {
  MutexKind kind = MutexKind::normal;
  Robustness robustness = Robustness::automatic;
  // Rounds of detail::spin_until (pause, doubling to 64 per round) before parking; 0 = park
  // at once. Adaptive: a thread spins only while no other thread is parked (WAITERS clear). The
  // default (~450 pauses, some 10-30 us) is about one futex wake-up on the VMs xproc targets.
  std::uint32_t spin_rounds = kMutexDefaultSpinRounds;
  // Robust mutexes only: how often a parked waiter asks the participant table whether the
  // owner's process died (for deaths the kernel's robust list cannot report). 1 ms .. 1 h.
  std::chrono::milliseconds backstop_interval = kMutexDefaultBackstopInterval;
};

// Thrown by lock()/try_lock()/try_lock_until/for() when the previous owner died: the caller
// HOLDS the lock and must repair the protected data, then make_consistent() (or unlock(),
// which makes the mutex not_recoverable).
class OwnerDied : public std::system_error {
 public:
  OwnerDied();
};

class Mutex {
 public:
  // Scope::thread, normal, not robust: the state of zero-filled memory.
  constexpr Mutex() noexcept = default;
  explicit Mutex(Scope scope, MutexOptions options = {}) noexcept;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
#if XPROC_TSAN_ENABLED
  ~Mutex() {
    detail::tsan_destroy(this);
  }
#else
  ~Mutex() = default;
#endif

  // ---- error-code API ----
  // {} = acquired; owner_died = acquired, inconsistent; otherwise not acquired.
  [[nodiscard]] std::error_code acquire() noexcept;
  [[nodiscard]] std::error_code acquire_until(Deadline deadline) noexcept;
  // would_block when another thread holds it (or the caller holds a non-recursive one).
  [[nodiscard]] std::error_code try_acquire() noexcept;
  // not_owner when the caller does not hold it (checked kinds and robust mutexes).
  [[nodiscard]] std::error_code release() noexcept;
  // Marks an owner-died mutex the caller holds as repaired. not_owner when the caller does not
  // hold it, invalid_argument when it is not inconsistent.
  [[nodiscard]] std::error_code make_consistent() noexcept;

  bool is_locked_by_caller() const noexcept;

  // ---- std Lockable / TimedLockable ----
  void lock();
  bool try_lock();
  void unlock();
  template <class C, class D>
  bool try_lock_until(const std::chrono::time_point<C, D>& deadline);
  template <class R, class P>
  bool try_lock_for(const std::chrono::duration<R, P>& timeout) {
    return try_lock_until(Clock::now() + timeout);
  }

  MutexKind kind() const noexcept {
    return static_cast<MutexKind>(kind_);
  }
  Scope scope() const noexcept {
    return static_cast<Scope>(scope_);
  }
  bool robust() const noexcept {
    return robust_ != 0;
  }

 private:
  friend struct detail::MutexAccess;
  friend struct detail::MutexLayout;

  static constexpr std::uint32_t kTidMask = sys::kFutexTidMask;
  static constexpr std::uint32_t kOwnerDied = sys::kFutexOwnerDiedBit;
  static constexpr std::uint32_t kWaiters = sys::kFutexWaitersBit;
  static constexpr std::uint32_t kNotRecoverable = kOwnerDied | kTidMask;
  static constexpr std::uint32_t owner_tid(std::uint32_t word) noexcept {
    return word & kTidMask;
  }
  static constexpr bool is_unlocked(std::uint32_t word) noexcept {
    return owner_tid(word) == 0;
  }
  static constexpr bool is_not_recoverable(std::uint32_t word) noexcept {
    return (word & ~kWaiters) == kNotRecoverable;
  }
  static constexpr bool owner_died(std::uint32_t word) noexcept {
    return (word & kOwnerDied) != 0;
  }

  bool fast_kind() const noexcept {
    return kind_ == 0 && robust_ == 0;
  }
  std::error_code acquire_slow(const Deadline* deadline, bool try_only, bool contended) noexcept;
  // Robust mutexes: the uncontended acquisition in straight-line code (unlocked word, CAS,
  // link), else acquire_slow().
  std::error_code acquire_robust() noexcept;
  std::error_code release_slow() noexcept;
  std::error_code release_impl(bool fully) noexcept;
  std::uint32_t spin_rounds() const noexcept {
    return spin_setting_ == 0 ? kMutexDefaultSpinRounds : spin_setting_ - 1;
  }
  // Robust words always use shared futex keys: the kernel's wake-up at an owner's death is a
  // shared FUTEX_WAKE, which never reaches a private waiter.
  sys::FutexScope futex_scope() const noexcept {
    return robust_ != 0 ? sys::FutexScope::process_shared
                        : sync::futex_scope(static_cast<Scope>(scope_));
  }
  [[noreturn]] static void throw_error(std::error_code ec);
  // TSan: every acquire is annotated as a try-lock, so a failed one (deadlock, timed_out...)
  // can be reported as failed.
  void tsan_post_acquire([[maybe_unused]] std::error_code ec) noexcept {
#if XPROC_TSAN_ENABLED  // (the comparisons below call out of line: keep them out of the hot path)
    const bool held = !ec || ec == errc::owner_died;
    if (ec == errc::owner_died) {
      // The dead owner never released it in TSan's books: start a fresh lock (TSan reports
      // this as destroying a locked mutex unless run with report_destroy_locked=0).
      detail::tsan_destroy(this);
      detail::tsan_create(this, 0);
    }
    detail::tsan_post_lock(
        this, held ? detail::kTsanTryLock : detail::kTsanTryLock | detail::kTsanTryLockFailed);
#endif
  }

  // Layout (a wire format: static_asserts in src/sync/mutex.cc). The robust-list node sits
  // at glibc's offsets: prev at +24, next at +32, so next + futex_offset (-32) = word.
  std::atomic<std::uint32_t> word_{0};           // +0  the lock word above
  std::uint8_t kind_ = 0;                        // +4  MutexKind; set at construction only
  std::uint8_t scope_ = 0;                       // +5  Scope
  std::uint8_t robust_ = 0;                      // +6  1 = robust
  [[maybe_unused]] std::uint8_t reserved0_ = 0;  // +7
  // +8: the owner's sys::this_thread_token(), 0 while unlocked. Written by the owner only
  // (after acquiring, cleared before releasing); read by any thread to compare with its own.
  std::atomic<std::uint64_t> owner_token_{0};
  std::uint32_t depth_ = 0;         // +16 recursion depth; touched by the owner only
  std::uint32_t spin_setting_ = 0;  // +20 0 = default spin rounds, else rounds + 1
  // +24/+32: the robust-list node {prev, next}. THE ONLY POINTERS IN SHARED STATE: private
  // links of the owner thread into its own (glibc's) robust list, read only by that thread
  // and by the kernel when that thread dies; meaningless to every other process.
  void* list_prev_ = nullptr;
  void* list_next_ = nullptr;
  // +40: the owner's participant-table record (0/0 = unknown), for the liveness backstop;
  // written by the owner (relaxed) after acquiring, cleared before releasing.
  std::atomic<std::uint32_t> owner_table_tag_{0};
  std::atomic<std::uint32_t> owner_participant_{0};
  std::uint32_t backstop_ms_ = 0;                 // +48 0 = default interval, else milliseconds
  [[maybe_unused]] std::uint32_t reserved1_ = 0;  // +52
};

// ---- inline hot paths ----

inline std::error_code Mutex::acquire() noexcept {
  detail::tsan_pre_lock(this, detail::kTsanTryLock);
  if (fast_kind()) {
    std::uint32_t expected = 0;
    const auto tid = static_cast<std::uint32_t>(sys::this_thread_id());
    // acquire: pairs with the release exchange in release(); makes the previous owner's
    // writes to the protected data visible. relaxed on failure: the slow path reloads.
    if (word_.compare_exchange_strong(expected, tid, std::memory_order_acquire,
                                      std::memory_order_relaxed)) [[likely]] {
      // relaxed: read only by threads comparing it with their own token (see banner).
      owner_token_.store(sys::this_thread_token(), std::memory_order_relaxed);
      detail::tsan_post_lock(this, detail::kTsanTryLock);
      return {};
    }
  }
  std::error_code ec = robust_ != 0 ? acquire_robust() : acquire_slow(nullptr, false, false);
  tsan_post_acquire(ec);
  return ec;
}

inline std::error_code Mutex::release() noexcept {
  if (fast_kind()) {
    detail::tsan_pre_unlock(this, 0);
    // relaxed: cleared before the release exchange below, which publishes it.
    owner_token_.store(0, std::memory_order_relaxed);
    // release: publishes the protected data; pairs with the acquire CAS in acquire().
    const std::uint32_t old = word_.exchange(0, std::memory_order_release);
    detail::tsan_post_unlock(this, 0);
    if ((old & kWaiters) != 0) (void)sys::futex_wake(word_, 1, futex_scope());
    return {};
  }
  return release_slow();  // annotates for TSan once ownership is established
}

inline void Mutex::lock() {
  if (std::error_code ec = acquire()) throw_error(ec);
}

inline void Mutex::unlock() {
  if (std::error_code ec = release()) throw_error(ec);
}

template <class C, class D>
bool Mutex::try_lock_until(const std::chrono::time_point<C, D>& deadline) {
  Deadline steady;
  if constexpr (std::is_same_v<C, Clock>) {
    steady = std::chrono::time_point_cast<Clock::duration>(deadline);
  } else {
    steady = Clock::now() + std::chrono::ceil<Clock::duration>(deadline - C::now());
  }
  std::error_code ec = acquire_until(steady);
  if (!ec) return true;
  if (ec == errc::timed_out) return false;
  throw_error(ec);
}

}  // namespace xproc::sync
