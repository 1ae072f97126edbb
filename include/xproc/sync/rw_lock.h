#pragma once
// RwLock: a reader-writer lock on 32-bit futex words, for threads of one process
// (Scope::thread) or for processes sharing MAP_SHARED memory (Scope::process), with three
// policies chosen at construction.
//
// Policies (RwPolicy):
//   prefer_reader  a reader enters whenever no writer holds the lock, even past waiting
//                  writers; writers can starve under a steady stream of readers.
//   prefer_writer  a reader waits while any writer holds or waits; readers can starve.
//   phase_fair     (the default) readers and writers alternate phases, as in Brandenburg and
//                  Anderson's phase-fair locks: a writer waits only for the readers present
//                  when it took the writer stage; readers arriving while a writer is staged
//                  enter together right after that writer's phase, before any later writer.
//                  Neither side starves; this is why it is the default, and why a zero-filled
//                  RwLock is a phase-fair Scope::thread lock.
//   Writers wait for the writer stage among themselves in no particular order.
//
// Recursive read locking never deadlocks, under every policy: a thread that already holds a
// read lock on this RwLock and takes it again passes every waiting writer. Each thread keeps
// its read holds in a thread_local table keyed by the lock's address in that thread's process
// (a lock mapped at different addresses in different processes is still one key per thread);
// a recursive hold touches no shared state. The table holds kMaxReadLocksPerThread distinct
// locks: taking a read lock on one more returns errc::limit_reached (lock_shared throws it).
// A read hold belongs to the thread that took it: release it on that thread.
//
// Thread- and process-safety: every member may be called concurrently. Blocking: lock,
// lock_shared, acquire, acquire_shared and the timed forms (until their deadline): a waiter
// spins (kSpinRounds), yields its CPU a few times (kYieldRounds), then parks; release and
// unlock never block. Upgrading (exclusive acquire while holding a read lock on the same lock)
// returns errc::deadlock instead of deadlocking (the try forms: would_block). Re-acquiring an
// exclusive hold the caller already has deadlocks (writers are not tracked per thread).
//
// Errors (error-code API; the std members throw std::system_error with the same codes where
// their return type cannot say it): timed_out (deadline passed), would_block (try forms),
// limit_reached (more than kMaxReaders concurrent reader threads, kMaxQueued queued writers or
// phase-fair waiting readers, or a full per-thread read-hold table), deadlock (upgrade),
// not_owner (release without a hold), corrupt_state (a shared word no correct participant
// writes).
//
// Death of a participant (SIGKILL at any instant) — what survivors see (timed forms always
// return; a survivor's recursive read always passes):
//   - a reader killed holding, or while queued as a phase-fair reader (promoted to holder at the
//     end of the writer phase): its hold stays counted, so writers time out. New readers pass
//     while no writer is staged, and again under every policy once a writer timed out.
//   - a writer killed holding: everyone waits (timed forms time out).
//   - a writer killed while staged (waiting for readers): writers wait; readers too, except
//     under prefer_reader.
//   - prefer_writer: a writer killed while waiting for the stage stays registered: readers wait.
//   - any waiter killed while parked: a parked count stays one too high; the only cost is an
//     unneeded futex wake system call per release.
//   A writer that merely times out leaves nothing behind, under every policy: readers that
//   waited behind it enter at once, beside the readers still inside, unless another writer has
//   meanwhile taken the stage (phase_fair: they then enter right after that writer's phase);
//   new readers enter as if the writer had never come.
//   A plain RwLock does not recover dead holders: where a peer may die holding the lock, use
//   the timed forms, or RobustRwLock (robust_rw_lock.h), which records holders per process and
//   lets a survivor release a dead process's holds. See docs/design/rw_lock.md.
//
// fork(): the child holds no locks. Read holds counted for the forking thread stay the
// parent's (the child's copy of the thread_local table is cleared by a pthread_atfork handler);
// a Scope::process lock keeps counting them until the parent releases. The child must not
// release holds taken by the parent. A Scope::thread lock copied into the child is a snapshot
// of the parent's state and should not be used in the child.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <system_error>
#include <type_traits>

#include "xproc/sync/scope.h"
#include "xproc/sys/error.h"
#include "xproc/sys/result.h"

namespace xproc::sync {

class RobustRwLock;
namespace detail {
struct RwOwners;
}  // namespace detail

enum class RwPolicy : std::uint8_t { prefer_reader, prefer_writer, phase_fair };

// A consistent copy of the lock's state, for tests and inspection tools.
struct RwLockSnapshot {
  std::uint32_t readers = 0;          // threads holding a read lock (recursion not counted)
  std::uint32_t queued_readers = 0;   // phase_fair: readers waiting for the staged writer
  std::uint32_t queued_writers = 0;   // prefer_writer: writers staged, waiting or holding
  bool writer_staged = false;         // a writer owns the writer stage (draining or holding)
  bool writer_holds = false;          // a writer holds the lock
  std::uint32_t parked_readers = 0;   // threads asleep in the kernel, by queue
  std::uint32_t parked_writers = 0;   // writers waiting for the stage
  std::uint32_t parked_drainers = 0;  // the staged writer waiting for readers to leave
};

class RwLock {
 public:
  static constexpr RwPolicy kDefaultPolicy = RwPolicy::phase_fair;
  static constexpr std::uint32_t kMaxReaders = (1u << 14) - 1;  // concurrent reader threads
  static constexpr std::uint32_t kMaxQueued = (1u << 14) - 1;   // see `queued_*` above
  static constexpr std::size_t kMaxReadLocksPerThread = 32;     // distinct locks read-held
  static constexpr std::uint32_t kSpinRounds = 64;              // detail::spin_until rounds
  // detail::yield_until rounds after the spin, before parking. Measured (docs/benchmarks.md,
  // read-mostly, 4 threads on 2 vCPUs): phase-fair 1.3 Mops/s with 0 rounds, 15.7 with 8, 15.3
  // with 64; the other policies unchanged.
  static constexpr std::uint32_t kYieldRounds = 8;

  explicit RwLock(Scope scope = Scope::thread, RwPolicy policy = kDefaultPolicy) noexcept;
  ~RwLock();
  RwLock(const RwLock&) = delete;
  RwLock& operator=(const RwLock&) = delete;
  RwLock(RwLock&&) = delete;
  RwLock& operator=(RwLock&&) = delete;

  Scope scope() const noexcept;
  RwPolicy policy() const noexcept;

  // Exclusive (write) side.
  [[nodiscard]] std::error_code acquire() noexcept;
  [[nodiscard]] std::error_code try_acquire() noexcept;  // would_block when it would wait
  [[nodiscard]] std::error_code acquire_until(Deadline deadline) noexcept;
  [[nodiscard]] std::error_code release() noexcept;

  // Shared (read) side.
  [[nodiscard]] std::error_code acquire_shared() noexcept;
  [[nodiscard]] std::error_code try_acquire_shared() noexcept;
  [[nodiscard]] std::error_code acquire_shared_until(Deadline deadline) noexcept;
  [[nodiscard]] std::error_code release_shared() noexcept;

  // Lockable / TimedLockable / SharedTimedLockable.
  void lock() { throw_if(acquire()); }
  bool try_lock() { return succeeded(try_acquire(), errc::would_block); }
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
    return succeeded(acquire_until(deadline_after(timeout)), errc::timed_out);
  }
  template <class C, class D>
  bool try_lock_until(const std::chrono::time_point<C, D>& deadline) {
    return succeeded(acquire_until(to_deadline(deadline)), errc::timed_out);
  }
  void unlock() { throw_if(release()); }

  void lock_shared() { throw_if(acquire_shared()); }
  bool try_lock_shared() { return succeeded(try_acquire_shared(), errc::would_block); }
  template <class Rep, class Period>
  bool try_lock_shared_for(const std::chrono::duration<Rep, Period>& timeout) {
    return succeeded(acquire_shared_until(deadline_after(timeout)), errc::timed_out);
  }
  template <class C, class D>
  bool try_lock_shared_until(const std::chrono::time_point<C, D>& deadline) {
    return succeeded(acquire_shared_until(to_deadline(deadline)), errc::timed_out);
  }
  void unlock_shared() { throw_if(release_shared()); }

  RwLockSnapshot snapshot() const noexcept;

 private:
  static void throw_if(std::error_code error) {
    if (error) throw std::system_error(error);
  }
  // true on success, false on `expected` failure, throws anything else.
  static bool succeeded(std::error_code error, errc expected) {
    if (!error) return true;
    if (error == expected) return false;
    throw std::system_error(error);
  }
  template <class Rep, class Period>
  static Deadline deadline_after(const std::chrono::duration<Rep, Period>& timeout) {
    const auto now = Clock::now();
    if (timeout <= timeout.zero()) return now;
    // Clamp: a timeout beyond the clock's range means "no deadline worth computing".
    if (std::chrono::duration<double>(timeout) >=
        std::chrono::duration<double>(Deadline::max() - now)) {
      return Deadline::max();
    }
    return now + std::chrono::ceil<Clock::duration>(timeout);
  }
  template <class C, class D>
  static Deadline to_deadline(const std::chrono::time_point<C, D>& deadline) {
    if constexpr (std::is_same_v<C, Clock>) {
      return std::chrono::time_point_cast<Clock::duration>(deadline);
    } else {
      return deadline_after(deadline - C::now());
    }
  }

  enum class Queue : std::uint8_t { readers, writers, drainers };
  std::atomic<std::uint32_t>& seq_word(Queue queue) noexcept;
  std::atomic<std::uint32_t>& parked_word(Queue queue) noexcept;
  template <class Ready>
  std::error_code wait(Queue queue, Ready ready, const std::optional<Deadline>& deadline) noexcept;
  void wake(Queue queue, int count) noexcept;

  // `owners` is the owner table of a RobustRwLock (robust_rw_lock.h), nullptr for a plain
  // RwLock; it is a local pointer, never stored in shared state.
  std::error_code acquire_shared_until_impl(const std::optional<Deadline>& deadline, bool try_only,
                                            detail::RwOwners* owners) noexcept;
  std::error_code release_shared_impl(detail::RwOwners* owners) noexcept;
  std::error_code lock_shared_slow(const std::optional<Deadline>& deadline, bool try_only) noexcept;
  std::error_code drop_readers(std::uint32_t count) noexcept;
  std::error_code lock_exclusive(const std::optional<Deadline>& deadline, bool try_only,
                                 detail::RwOwners* owners) noexcept;
  std::error_code take_stage(const std::optional<Deadline>& deadline) noexcept;
  std::error_code drain(const std::optional<Deadline>& deadline, detail::RwOwners* owners) noexcept;
  void leave_stage_after_timeout(detail::RwOwners* owners) noexcept;
  std::error_code release_impl(detail::RwOwners* owners, bool annotate) noexcept;
  void after_writer_leaves(std::uint32_t next) noexcept;
  // Recovery (RobustRwLock): ends the stage of a dead writer; true when it held the lock.
  Result<bool> release_dead_writer() noexcept;
  friend class RobustRwLock;

  // state_: the lock itself.
  //   bits  0..13  readers       threads holding a read lock
  //   bits 14..27  queued        phase_fair: readers waiting for the staged writer's phase;
  //                              prefer_writer: writers registered (waiting, staged, holding);
  //                              prefer_reader: always 0
  //   bit  28      kStaged       one writer owns the writer stage (waiting for readers or holding)
  //   bit  29      kWriterHolds  that writer holds the lock (readers == 0); implies kStaged
  //   bit  30      reserved      always 0 (was kOrphaned); a 1 reads as errc::corrupt_state
  //   bit  31      kPhase        phase_fair: flips at every end of a writer phase; a queued reader
  //                              knows it was promoted to holder when the bit differs from the one
  //                              it queued under. Every flip happens while readers == 0, so a
  //                              promoted reader (counted in readers until it releases) can never
  //                              see a second flip: no ABA. A staged writer that times out with
  //                              readers inside frees the stage WITHOUT a flip; its queued readers
  //                              then see "stage free, same phase" and move themselves from
  //                              queued to readers (one CAS that also compares the phase bit).
  //   phase_fair: queued > 0 with !kStaged is transient (withdrawn readers on their way in); a
  //   writer may take the stage meanwhile, and the end of its phase promotes them.
  std::atomic<std::uint32_t> state_;
  // config_: bit 0..1 policy code (0 phase_fair, 1 prefer_reader, 2 prefer_writer, so that a
  // zero-filled lock is phase-fair), bit 8 Scope::process. Written once by the constructor.
  std::atomic<std::uint32_t> config_;
  // Per wait queue: a sequence word the waiters sleep on (bumped before every wake, so a wake
  // between a waiter's re-check and its sleep is never lost) and a count of parked waiters
  // (notifiers skip the system call when it is 0).
  std::atomic<std::uint32_t> reader_seq_;
  std::atomic<std::uint32_t> readers_parked_;
  std::atomic<std::uint32_t> writer_seq_;
  std::atomic<std::uint32_t> writers_parked_;
  std::atomic<std::uint32_t> drain_seq_;
  std::atomic<std::uint32_t> drainers_parked_;
};

static_assert(sizeof(RwLock) == 32 && alignof(RwLock) == 4);
static_assert(std::is_standard_layout_v<RwLock>);

}  // namespace xproc::sync
