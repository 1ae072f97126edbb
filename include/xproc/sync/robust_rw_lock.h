#pragma once
// RobustRwLock: an RwLock (rw_lock.h: same policies, same API, same recursion guarantee) plus a
// table that records which process holds it, so that a survivor can release the holds of a
// process that died.
//
// Owners are processes, named by a 32-bit owner id. A process's owner id is always derived
// from the participant table, xproc's one liveness mechanism (participant_table.h,
// detail/liveness.h): the packed ParticipantId of this process's owner record
// (detail::this_process_owner_record()). A process attached to no table (record {0, 0}; also
// every fork child until it attaches) takes the lock anonymously: it works, but its holds cannot
// be recovered. Scope::thread locks record nothing.
// Preconditions: every process that uses one lock attaches to the same
// participant table (the one of the segment holding the lock: the lock records packed ids, not
// the table's tag), and keeps the Participant that names it attached while it holds the lock
// (detaching is dying, for the lock: its recorded holds read dead and recover() drops them).
//
// recover() asks detail::owner_known_dead({this process's table tag, owner}) about every recorded
// owner; recover(is_dead) asks the caller's predicate instead (tests, callers with their own
// knowledge of which participant ids died). For each dead owner it
// releases what it certainly held, waking waiters as a live release would:
//   - its read holds (counted per process in one of kOwnerSlots slots);
//   - the writer stage it held, waiting for readers or holding the lock (write_lock_released:
//     the data the lock protects may be half-written; repair it before trusting it).
// What is NOT recoverable, and why (the rule: when in doubt, leave the count, because a leaked
// hold costs liveness, which timed operations bound, and a wrongly dropped one costs exclusion):
//   - a death inside the few instructions between the lock word's update and the owner table's
//     (counted as read_holds_unresolved when the owner's table entry says an operation was in
//     flight; a writer killed between taking the stage and recording itself is not seen at all);
//     a reader killed while queued or parked is such an operation in flight;
//   - holds of processes beyond kOwnerSlots concurrent owners, or without an owner id;
//   - prefer_writer: a writer killed while waiting for the stage stays registered, so readers wait
//     (their timed forms time out).
// The predicate must never call a live owner dead (that releases holds still in use);
// owner_known_dead() never does (a live participant always reads alive), and answers "not dead"
// when the recoverer itself is attached to no table, so recover() then releases nothing.
// recover() may run in any number of survivors at once: each dead owner's entry is claimed by
// one of them (CAS), so nothing is released twice; a recoverer killed mid-way leaves that entry
// claimed (a leak, never a double release).
//
// Thread- and process-safety, blocking, errors: as RwLock; recover() also never blocks (one
// F_OFD_GETLK per recorded owner). fork(): as RwLock; the child is anonymous (its owner record
// is {0, 0}) until it attaches to the table itself. Size: 292 bytes.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "xproc/sync/rw_lock.h"
#include "xproc/sys/result.h"

namespace xproc::sync {

// The owner id RobustRwLock records for the calling process: the packed participant id of
// detail::this_process_owner_record(); 0 = anonymous (attached to no table, or a packed id equal
// to the reserved kRecovering, 0xffffffff). One relaxed load.
std::uint32_t lock_owner_id() noexcept;

struct RwRecovery {
  std::uint32_t read_holds_released = 0;    // dead readers' holds dropped from the lock
  std::uint32_t read_holds_unresolved = 0;  // operations a dead process had in flight: left
  bool write_lock_released = false;         // a dead writer held it: protected data suspect
  bool stage_released = false;              // a dead writer was staged (waiting for readers)
};

namespace detail {

// The owner table, in shared memory next to the lock.
//   stage_owner  owner id of the writer that holds the writer stage, recorded after it takes
//                the stage and cleared before it leaves it; 0 = none or not recorded;
//                kRecovering = a survivor is releasing it.
//   slot_owner   owner id of the process whose read holds slot_count counts; 0 = free;
//                kRecovering = a survivor is releasing them. A slot stays with its process while
//                the process lives (only recovery frees it).
//   slot_count   bits 0..19  holds    read holds certainly counted in the lock word
//                bits 20..31 pending  acquires/releases in flight: maybe counted, maybe not
struct RwOwners {
  static constexpr std::size_t kSlots = 32;
  static constexpr std::uint32_t kRecovering = 0xffffffffu;
  static constexpr std::uint32_t kHoldOne = 1u;
  static constexpr std::uint32_t kHoldsMask = 0xfffffu;
  static constexpr std::uint32_t kPendingShift = 20;
  static constexpr std::uint32_t kPendingOne = 1u << kPendingShift;

  static constexpr std::uint32_t holds(std::uint32_t count) { return count & kHoldsMask; }
  static constexpr std::uint32_t pending(std::uint32_t count) { return count >> kPendingShift; }

  // Reader side, called by RwLock. begin_acquire returns the slot now counting one pending
  // operation for `owner`, or -1 (anonymous: no owner id, table full, counters full).
  int begin_acquire(std::uint32_t owner) noexcept;
  void abort_acquire(int slot) noexcept;   // pending--
  void commit_acquire(int slot) noexcept;  // holds++, pending-- (one RMW)
  void begin_release(int slot) noexcept;   // holds--, pending++ (one RMW)
  void commit_release(int slot) noexcept;  // pending--

  std::atomic<std::uint32_t> stage_owner;
  std::atomic<std::uint32_t> slot_owner[kSlots];
  std::atomic<std::uint32_t> slot_count[kSlots];
};

}  // namespace detail

class RobustRwLock {
 public:
  static constexpr std::size_t kOwnerSlots = detail::RwOwners::kSlots;

  explicit RobustRwLock(Scope scope = Scope::thread,
                        RwPolicy policy = RwLock::kDefaultPolicy) noexcept;
  RobustRwLock(const RobustRwLock&) = delete;
  RobustRwLock& operator=(const RobustRwLock&) = delete;
  RobustRwLock(RobustRwLock&&) = delete;
  RobustRwLock& operator=(RobustRwLock&&) = delete;
  ~RobustRwLock() = default;

  Scope scope() const noexcept { return lock_.scope(); }
  RwPolicy policy() const noexcept { return lock_.policy(); }

  [[nodiscard]] std::error_code acquire() noexcept {
    return lock_.lock_exclusive(std::nullopt, false, owners());
  }
  [[nodiscard]] std::error_code try_acquire() noexcept {
    return lock_.lock_exclusive(std::nullopt, true, owners());
  }
  [[nodiscard]] std::error_code acquire_until(Deadline deadline) noexcept {
    return lock_.lock_exclusive(deadline, false, owners());
  }
  [[nodiscard]] std::error_code release() noexcept { return lock_.release_impl(owners(), true); }
  [[nodiscard]] std::error_code acquire_shared() noexcept {
    return lock_.acquire_shared_until_impl(std::nullopt, false, owners());
  }
  [[nodiscard]] std::error_code try_acquire_shared() noexcept {
    return lock_.acquire_shared_until_impl(std::nullopt, true, owners());
  }
  [[nodiscard]] std::error_code acquire_shared_until(Deadline deadline) noexcept {
    return lock_.acquire_shared_until_impl(deadline, false, owners());
  }
  [[nodiscard]] std::error_code release_shared() noexcept {
    return lock_.release_shared_impl(owners());
  }

  void lock() { RwLock::throw_if(acquire()); }
  bool try_lock() { return RwLock::succeeded(try_acquire(), errc::would_block); }
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
    return RwLock::succeeded(acquire_until(RwLock::deadline_after(timeout)), errc::timed_out);
  }
  template <class C, class D>
  bool try_lock_until(const std::chrono::time_point<C, D>& deadline) {
    return RwLock::succeeded(acquire_until(RwLock::to_deadline(deadline)), errc::timed_out);
  }
  void unlock() { RwLock::throw_if(release()); }
  void lock_shared() { RwLock::throw_if(acquire_shared()); }
  bool try_lock_shared() { return RwLock::succeeded(try_acquire_shared(), errc::would_block); }
  template <class Rep, class Period>
  bool try_lock_shared_for(const std::chrono::duration<Rep, Period>& timeout) {
    return RwLock::succeeded(acquire_shared_until(RwLock::deadline_after(timeout)),
                             errc::timed_out);
  }
  template <class C, class D>
  bool try_lock_shared_until(const std::chrono::time_point<C, D>& deadline) {
    return RwLock::succeeded(acquire_shared_until(RwLock::to_deadline(deadline)), errc::timed_out);
  }
  void unlock_shared() { RwLock::throw_if(release_shared()); }

  RwLockSnapshot snapshot() const noexcept { return lock_.snapshot(); }

  // Releases what dead participants held, asking the participant table (see the banner):
  // recover(is_dead) with detail::owner_known_dead({this process's table tag, owner}).
  // Errors: as recover(is_dead).
  Result<RwRecovery> recover() noexcept;

  // Releases what dead owners held (see the banner). `is_dead(std::uint32_t owner) -> bool`.
  // errc::corrupt_state when the table and the lock word disagree (a hold count larger than the
  // lock's reader count): nothing more is released.
  template <class IsDead>
  Result<RwRecovery> recover(IsDead&& is_dead) {
    RwRecovery summary;
    for (std::size_t slot = 0; slot < kOwnerSlots; ++slot) {
      // acquire: pairs with the release that claimed the slot; we then read its counts.
      const std::uint32_t owner = owners_.slot_owner[slot].load(std::memory_order_acquire);
      if (owner == 0 || owner == detail::RwOwners::kRecovering || !is_dead(owner)) continue;
      if (std::error_code error = recover_readers(slot, owner, summary)) return error;
    }
    // acquire: pairs with the release store of the staged writer's id.
    const std::uint32_t writer = owners_.stage_owner.load(std::memory_order_acquire);
    if (writer != 0 && writer != detail::RwOwners::kRecovering && is_dead(writer)) {
      if (std::error_code error = recover_writer(writer, summary)) return error;
    }
    return summary;
  }

 private:
  detail::RwOwners* owners() noexcept {
    return lock_.scope() == Scope::process ? &owners_ : nullptr;
  }
  std::error_code recover_readers(std::size_t slot, std::uint32_t owner,
                                  RwRecovery& summary) noexcept;
  std::error_code recover_writer(std::uint32_t owner, RwRecovery& summary) noexcept;

  RwLock lock_;
  detail::RwOwners owners_;
};

static_assert(sizeof(RobustRwLock) ==
              sizeof(RwLock) + 4 + 2 * sizeof(std::uint32_t) * RobustRwLock::kOwnerSlots);
static_assert(alignof(RobustRwLock) == 4);
static_assert(std::is_standard_layout_v<RobustRwLock>);

}  // namespace xproc::sync
