#include "xproc/sync/rw_lock.h"

#include <pthread.h>

#include <array>
#include <climits>
#include <cstdlib>

#include "xproc/sync/detail/spin.h"
#include "xproc/sync/detail/tsan.h"
#include "xproc/sync/robust_rw_lock.h"
#include "xproc/sys/futex.h"

namespace xproc::sync {
namespace {

// state_ fields (see the table in rw_lock.h).
constexpr std::uint32_t kReaderOne = 1u;
constexpr std::uint32_t kReadersMask = 0x3fffu;
constexpr std::uint32_t kQueuedShift = 14;
constexpr std::uint32_t kQueuedOne = 1u << kQueuedShift;
constexpr std::uint32_t kQueuedMask = 0x3fffu << kQueuedShift;
constexpr std::uint32_t kStaged = 1u << 28;
constexpr std::uint32_t kWriterHolds = 1u << 29;
constexpr std::uint32_t kReserved = 1u << 30;  // never written (formerly kOrphaned)
constexpr std::uint32_t kPhase = 1u << 31;

constexpr std::uint32_t readers(std::uint32_t state) {
  return state & kReadersMask;
}
constexpr std::uint32_t queued(std::uint32_t state) {
  return (state & kQueuedMask) >> kQueuedShift;
}
constexpr bool staged(std::uint32_t state) {
  return (state & kStaged) != 0;
}
constexpr bool writer_holds(std::uint32_t state) {
  return (state & kWriterHolds) != 0;
}
constexpr bool reserved_set(std::uint32_t state) {
  return (state & kReserved) != 0;
}

// phase_fair: ends a writer phase. Only called with readers == 0: the queued readers become
// holders, the stage is freed and the phase bit flips (which tells each queued reader it holds).
constexpr std::uint32_t end_phase(std::uint32_t state) {
  return ((state & kPhase) ^ kPhase) | queued(state);
}

// config_ fields.
constexpr std::uint32_t kPolicyMask = 0x3u;
constexpr std::uint32_t kProcessScope = 1u << 8;
constexpr std::uint32_t policy_code(RwPolicy policy) {
  switch (policy) {
    case RwPolicy::prefer_reader:
      return 1;
    case RwPolicy::prefer_writer:
      return 2;
    case RwPolicy::phase_fair:
      break;
  }
  return 0;
}

// The calling thread's read holds: which RwLocks (by address in this process) it holds how
// many times. Constant-initialized, so access needs no TLS guard.
struct ReadHold {
  const RwLock* lock;
  std::uint32_t depth;
  int owner_slot;  // RobustRwLock: the owner-table slot counting this hold, -1 = none
};
struct ReadHoldTable {
  std::array<ReadHold, RwLock::kMaxReadLocksPerThread> holds;
  std::size_t used;
};
thread_local ReadHoldTable tls_read_holds{};

ReadHold* find_hold(const RwLock* lock) noexcept {
  ReadHoldTable& table = tls_read_holds;
  for (std::size_t i = 0; i < table.used; ++i) {
    if (table.holds[i].lock == lock) return &table.holds[i];
  }
  return nullptr;
}

void remove_hold(ReadHold* hold) noexcept {
  ReadHoldTable& table = tls_read_holds;
  *hold = table.holds[table.used - 1];
  --table.used;
}

// The fork child's only thread is a copy of the forking thread: the holds in its table are the
// parent's, not the child's.
void forget_holds_in_fork_child() noexcept {
  tls_read_holds.used = 0;
}
[[maybe_unused]] const bool kForkHandlerRegistered = [] {
  if (pthread_atfork(nullptr, nullptr, forget_holds_in_fork_child) != 0) std::abort();
  return true;
}();

}  // namespace

RwLock::RwLock(Scope scope, RwPolicy policy) noexcept {
  // relaxed: the object is not shared yet; publishing it to other threads or processes (a
  // segment's ready flag, thread start) orders these stores.
  state_.store(0, std::memory_order_relaxed);
  config_.store(policy_code(policy) | (scope == Scope::process ? kProcessScope : 0u),
                std::memory_order_relaxed);
  for (auto* word : {&reader_seq_, &readers_parked_, &writer_seq_, &writers_parked_, &drain_seq_,
                     &drainers_parked_}) {
    word->store(0, std::memory_order_relaxed);  // relaxed: as above
  }
  detail::tsan_create(this, 0);
}

RwLock::~RwLock() {
  detail::tsan_destroy(this);
}

Scope RwLock::scope() const noexcept {
  // relaxed: config_ is written once before the lock is shared.
  return (config_.load(std::memory_order_relaxed) & kProcessScope) != 0 ? Scope::process
                                                                        : Scope::thread;
}

RwPolicy RwLock::policy() const noexcept {
  // relaxed: as in scope(). Code 3 is never written; it reads as the default policy.
  switch (config_.load(std::memory_order_relaxed) & kPolicyMask) {
    case 1:
      return RwPolicy::prefer_reader;
    case 2:
      return RwPolicy::prefer_writer;
    default:
      return RwPolicy::phase_fair;
  }
}

std::atomic<std::uint32_t>& RwLock::seq_word(Queue queue) noexcept {
  switch (queue) {
    case Queue::readers:
      return reader_seq_;
    case Queue::writers:
      return writer_seq_;
    case Queue::drainers:
      break;
  }
  return drain_seq_;
}

std::atomic<std::uint32_t>& RwLock::parked_word(Queue queue) noexcept {
  switch (queue) {
    case Queue::readers:
      return readers_parked_;
    case Queue::writers:
      return writers_parked_;
    case Queue::drainers:
      break;
  }
  return drainers_parked_;
}

// Spins, then parks until `ready()` holds, a wake-up, or the deadline. Returns {} when ready()
// held or after a wake-up (the caller re-checks), timed_out, or a futex error.
// Lost wake-ups: the waiter does (1) parked++ (2) read seq (3) ready() (4) sleep while seq is
// unchanged; a notifier does (a) its state_ RMW (b) parked load, and if nonzero (c) seq++ and
// wake. (1), (3), (a), (b) are seq_cst, so either (b) sees the waiter's (1) — then (c) changes
// seq after (2) or wakes the sleeper — or (3) sees (a)'s new state.
template <class Ready>
std::error_code RwLock::wait(Queue queue, Ready ready,
                             const std::optional<Deadline>& deadline) noexcept {
  if (detail::spin_until(ready, kSpinRounds)) return {};
  // Phases make a waiter depend on threads that may be preempted (a promoted reader counted as
  // a holder, the readers a staged writer drains): give them the CPU before sleeping.
  if (detail::yield_until(ready, kYieldRounds)) return {};
  if (deadline && Clock::now() >= *deadline) return errc::timed_out;
  std::atomic<std::uint32_t>& parked = parked_word(queue);
  std::atomic<std::uint32_t>& seq = seq_word(queue);
  // seq_cst: announce-then-re-check (store-load); pairs with the notifier's parked load.
  parked.fetch_add(1, std::memory_order_seq_cst);
  // seq_cst: read before ready(); a bump after this read makes the futex_wait return at once.
  const std::uint32_t ticket = seq.load(std::memory_order_seq_cst);
  std::error_code error;
  if (!ready()) error = sys::futex_wait(seq, ticket, futex_scope(scope()), deadline);
  // relaxed: only a hint for notifiers; a stale high value costs one futex_wake.
  parked.fetch_sub(1, std::memory_order_relaxed);
  if (error == errc::would_block) return {};
  return error;
}

void RwLock::wake(Queue queue, int count) noexcept {
  // seq_cst: the load side of the notifier's store-load; pairs with parked++ in wait().
  if (parked_word(queue).load(std::memory_order_seq_cst) == 0) return;
  // release: a waiter that reads the new seq also sees the state change made before it.
  seq_word(queue).fetch_add(1, std::memory_order_release);
  (void)sys::futex_wake(seq_word(queue), count, futex_scope(scope()));
}

// ---- shared side ------------------------------------------------------------------------------

std::error_code RwLock::acquire_shared() noexcept {
  return acquire_shared_until_impl(std::nullopt, false, nullptr);
}
std::error_code RwLock::try_acquire_shared() noexcept {
  return acquire_shared_until_impl(std::nullopt, true, nullptr);
}
std::error_code RwLock::acquire_shared_until(Deadline deadline) noexcept {
  return acquire_shared_until_impl(deadline, false, nullptr);
}
std::error_code RwLock::release_shared() noexcept {
  return release_shared_impl(nullptr);
}

std::error_code RwLock::acquire_shared_until_impl(const std::optional<Deadline>& deadline,
                                                  bool try_only,
                                                  detail::RwOwners* owners) noexcept {
  constexpr unsigned flags = detail::kTsanReadLock | detail::kTsanTryLock;
  if (ReadHold* hold = find_hold(this)) {
    // Recursive read: this thread already holds it, so no writer can hold it; pass every waiter.
    if (hold->depth == UINT32_MAX) return errc::limit_reached;
    detail::tsan_pre_lock(this, flags);
    ++hold->depth;
    detail::tsan_post_lock(this, flags);
    return {};
  }
  ReadHoldTable& table = tls_read_holds;
  if (table.used == table.holds.size()) return errc::limit_reached;
  detail::tsan_pre_lock(this, flags);
  // Robust: announce the acquire as pending in our process's slot before the lock word counts
  // it, and turn it into a certain hold after (see robust_rw_lock.h).
  const int slot = owners != nullptr ? owners->begin_acquire(lock_owner_id()) : -1;
  const std::error_code error = lock_shared_slow(deadline, try_only);
  if (error) {
    if (slot >= 0) owners->abort_acquire(slot);
    detail::tsan_post_lock(this, flags | detail::kTsanTryLockFailed);
    return error;
  }
  if (slot >= 0) owners->commit_acquire(slot);
  table.holds[table.used++] = ReadHold{this, 1, slot};
  detail::tsan_post_lock(this, flags);
  return {};
}

std::error_code RwLock::lock_shared_slow(const std::optional<Deadline>& deadline,
                                         bool try_only) noexcept {
  const RwPolicy rw_policy = policy();
  auto admitted = [rw_policy](std::uint32_t state) {
    switch (rw_policy) {
      case RwPolicy::prefer_reader:
        return !writer_holds(state);
      case RwPolicy::prefer_writer:
        return !staged(state) && queued(state) == 0;
      case RwPolicy::phase_fair:
        break;
    }
    return !staged(state);
  };
  bool last_chance = false;
  // relaxed: a guess for the CAS, which re-validates it.
  std::uint32_t state = state_.load(std::memory_order_relaxed);
  for (;;) {
    if (admitted(state)) {
      if (readers(state) == kMaxReaders) return errc::limit_reached;
      // acquire: pairs with the release of the last writer's unlock (its data is visible).
      if (state_.compare_exchange_weak(state, state + kReaderOne, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        return {};
      }
      continue;
    }
    if (try_only) return errc::would_block;
    if (last_chance) return errc::timed_out;
    if (rw_policy == RwPolicy::phase_fair) break;  // queue behind the staged writer
    // seq_cst: ready() is the re-check of wait()'s store-load (see wait()).
    std::error_code error = wait(
        Queue::readers, [&] { return admitted(state_.load(std::memory_order_seq_cst)); }, deadline);
    if (error == errc::timed_out) {
      last_chance = true;
    } else if (error) {
      return error;
    }
    state = state_.load(std::memory_order_relaxed);  // relaxed: re-validated by the CAS
  }

  // phase_fair: queue for the reader phase after the staged writer's.
  for (;;) {
    if (!staged(state)) {
      // The stage ended before we queued: enter directly.
      if (readers(state) == kMaxReaders) return errc::limit_reached;
      // acquire: as above.
      if (state_.compare_exchange_weak(state, state + kReaderOne, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        return {};
      }
      continue;
    }
    if (queued(state) == kMaxQueued) return errc::limit_reached;
    // relaxed: queuing publishes nothing; the acquire load that sees the phase flip below
    // pairs with the release of the RMW that promoted us.
    if (state_.compare_exchange_weak(state, state + kQueuedOne, std::memory_order_relaxed,
                                     std::memory_order_relaxed)) {
      break;
    }
  }
  // Queued under `phase`. We leave the queue in one of three ways (see "Timeouts" in
  // docs/design/rw_lock.md):
  //   promoted   the phase flipped: the writer's phase ended and its RMW counted us as a holder;
  //   withdrawn  the stage is free but the phase did not flip: the staged writer timed out and
  //              left us queued; we admit ourselves (queued--, readers++ in one CAS);
  //   timed out  still staged at our deadline: queued--.
  // No ABA: the phase flips only with readers == 0 and each flip counts every queued reader as a
  // holder, so while our unit is in `queued` the phase is still `phase`, and once promoted we stay
  // counted in readers (no further flip) until we release. Every CAS below compares the phase bit
  // too, so a self-admission or a dequeue can never act on a unit a flip already moved.
  const std::uint32_t phase = state & kPhase;
  auto movable = [phase](std::uint32_t word) { return (word & kPhase) != phase || !staged(word); };
  for (;;) {
    // seq_cst: ready() is the re-check of wait()'s store-load; also acquire for the promotion.
    const std::error_code error = wait(
        Queue::readers, [&] { return movable(state_.load(std::memory_order_seq_cst)); }, deadline);
    // acquire: pairs with the release RMW that flipped the phase and counted us as a holder.
    state = state_.load(std::memory_order_acquire);
    for (;;) {
      if ((state & kPhase) != phase) return {};  // promoted: we hold the lock
      std::uint32_t next = 0;
      if (!staged(state)) {
        // Withdrawn: enter the current read phase ourselves (even past our deadline: the lock
        // is ours for the taking, as when the phase ended meanwhile).
        if (readers(state) == kMaxReaders) {
          next = state - kQueuedOne;
        } else {
          next = state - kQueuedOne + kReaderOne;
        }
      } else if (!error) {
        break;  // staged again (or a spurious wake-up): keep waiting for its phase
      } else {
        next = state - kQueuedOne;  // timed out behind a staged writer: leave the queue
      }
      // acquire (both): success as a reader pairs with the release RMW of the last writer's
      // unlock (an RMW chain continues its release sequence); on failure we may find ourselves
      // promoted and return holding.
      if (state_.compare_exchange_weak(state, next, std::memory_order_acquire,
                                       std::memory_order_acquire)) {
        if (readers(next) != readers(state)) return {};
        return staged(state) ? error : std::error_code(errc::limit_reached);
      }
    }
  }
}

std::error_code RwLock::release_shared_impl(detail::RwOwners* owners) noexcept {
  ReadHold* hold = find_hold(this);
  if (hold == nullptr) return errc::not_owner;
  detail::tsan_pre_unlock(this, detail::kTsanReadLock);
  if (hold->depth > 1) {
    --hold->depth;
    detail::tsan_post_unlock(this, detail::kTsanReadLock);
    return {};
  }
  const int slot = owners != nullptr ? hold->owner_slot : -1;
  remove_hold(hold);
  if (slot >= 0) owners->begin_release(slot);  // the hold becomes "maybe counted"
  const std::error_code error = drop_readers(1);
  if (slot >= 0) owners->commit_release(slot);
  detail::tsan_post_unlock(this, detail::kTsanReadLock);
  return error;
}

// Removes `count` reader holds from the lock word (one release, or a dead process's holds) and
// wakes whoever that lets in.
std::error_code RwLock::drop_readers(std::uint32_t count) noexcept {
  std::uint32_t state = state_.load(std::memory_order_relaxed);  // relaxed: CAS re-validates
  std::uint32_t next = 0;
  for (;;) {
    if (readers(state) < count || writer_holds(state)) return errc::corrupt_state;
    next = state - count * kReaderOne;
    // seq_cst: release (our reads happen before the next writer's acquire) and the store half of
    // the notifier's store-load with the parked counts (see wait()).
    if (state_.compare_exchange_weak(state, next, std::memory_order_seq_cst,
                                     std::memory_order_relaxed)) {
      break;
    }
  }
  if (readers(next) == 0 && staged(next)) {
    wake(Queue::drainers, 1);  // the staged writer waits for the readers to drain
  }
  return {};
}

// ---- exclusive side ---------------------------------------------------------------------------

std::error_code RwLock::acquire() noexcept {
  return lock_exclusive(std::nullopt, false, nullptr);
}
std::error_code RwLock::try_acquire() noexcept {
  return lock_exclusive(std::nullopt, true, nullptr);
}
std::error_code RwLock::acquire_until(Deadline deadline) noexcept {
  return lock_exclusive(deadline, false, nullptr);
}
std::error_code RwLock::release() noexcept {
  return release_impl(nullptr, true);
}

// Robust: the staged writer records its owner id after taking the stage (release: a recoverer
// that reads it also sees the stage taken) and clears it before leaving the stage.
static void record_stage_owner(detail::RwOwners* owners) noexcept {
  if (owners != nullptr) owners->stage_owner.store(lock_owner_id(), std::memory_order_release);
}
static void clear_stage_owner(detail::RwOwners* owners) noexcept {
  // relaxed: only a dead writer's entry is ever acted on; a live one clears its own.
  if (owners != nullptr) owners->stage_owner.store(0, std::memory_order_relaxed);
}

std::error_code RwLock::lock_exclusive(const std::optional<Deadline>& deadline, bool try_only,
                                       detail::RwOwners* owners) noexcept {
  // An upgrade would wait for our own read hold: refuse (a try form just would block).
  if (find_hold(this) != nullptr) return try_only ? errc::would_block : errc::deadlock;
  const unsigned flags = detail::kTsanTryLock;
  detail::tsan_pre_lock(this, flags);
  const RwPolicy rw_policy = policy();
  std::uint32_t state = state_.load(std::memory_order_relaxed);  // relaxed: CAS re-validates
  if (try_only) {
    // One step from "stage free, no readers" to "writer holds"; never waits or queues.
    for (;;) {
      const bool free = !staged(state) && readers(state) == 0 &&
                        (rw_policy != RwPolicy::prefer_writer || queued(state) < kMaxQueued);
      if (!free) {
        detail::tsan_post_lock(this, flags | detail::kTsanTryLockFailed);
        return errc::would_block;
      }
      std::uint32_t next = state | kStaged | kWriterHolds;
      if (rw_policy == RwPolicy::prefer_writer) next += kQueuedOne;
      // acquire: pairs with the release of the previous holders' unlocks.
      if (state_.compare_exchange_weak(state, next, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        record_stage_owner(owners);
        detail::tsan_post_lock(this, flags);
        return {};
      }
    }
  }
  if (rw_policy == RwPolicy::prefer_writer) {
    // Register: from now on new readers wait.
    for (;;) {
      if (queued(state) == kMaxQueued) {
        detail::tsan_post_lock(this, flags | detail::kTsanTryLockFailed);
        return errc::limit_reached;
      }
      // relaxed: registering publishes nothing; readers that miss it are admitted before us.
      if (state_.compare_exchange_weak(state, state + kQueuedOne, std::memory_order_relaxed,
                                       std::memory_order_relaxed)) {
        break;
      }
    }
  }
  std::error_code error = take_stage(deadline);
  if (!error) {
    record_stage_owner(owners);
    error = drain(deadline, owners);
  }
  detail::tsan_post_lock(this, error ? flags | detail::kTsanTryLockFailed : flags);
  return error;
}

// Takes the writer stage, and the lock with it when no reader holds it. On failure (timed out)
// the stage is not ours and, for prefer_writer, our registration is withdrawn.
std::error_code RwLock::take_stage(const std::optional<Deadline>& deadline) noexcept {
  const RwPolicy rw_policy = policy();
  auto free = [](std::uint32_t state) { return !staged(state); };
  bool last_chance = false;
  std::uint32_t state = state_.load(std::memory_order_relaxed);  // relaxed: CAS re-validates
  for (;;) {
    if (free(state)) {
      std::uint32_t next = state | kStaged;
      if (readers(next) == 0) next |= kWriterHolds;
      // acquire: pairs with the release of the previous holders' unlocks.
      if (state_.compare_exchange_weak(state, next, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        return {};
      }
      continue;
    }
    if (last_chance) break;
    // seq_cst: ready() is the re-check of wait()'s store-load.
    const std::error_code error = wait(
        Queue::writers, [&] { return free(state_.load(std::memory_order_seq_cst)); }, deadline);
    // Timed out (or a futex error, reported as timed_out too): one last look, then give up.
    if (error) last_chance = true;
    state = state_.load(std::memory_order_relaxed);  // relaxed: CAS re-validates
  }
  if (rw_policy == RwPolicy::prefer_writer) {
    std::uint32_t next = 0;
    for (;;) {
      next = state - kQueuedOne;
      // seq_cst: store half of the store-load with readers_parked_ (see wait()).
      if (state_.compare_exchange_weak(state, next, std::memory_order_seq_cst,
                                       std::memory_order_relaxed)) {
        break;
      }
    }
    if (queued(next) == 0 && !staged(next)) wake(Queue::readers, INT_MAX);
  }
  return errc::timed_out;
}

// The staged writer waits for the readers present when it took the stage; then it holds.
std::error_code RwLock::drain(const std::optional<Deadline>& deadline,
                              detail::RwOwners* owners) noexcept {
  bool last_chance = false;
  std::uint32_t state = state_.load(std::memory_order_relaxed);  // relaxed: CAS re-validates
  for (;;) {
    if (writer_holds(state)) return {};  // take_stage found no readers
    if (readers(state) == 0) {
      // acquire: pairs with the release RMW of the last reader's unlock.
      if (state_.compare_exchange_weak(state, state | kWriterHolds, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        return {};
      }
      continue;
    }
    if (last_chance) break;
    // seq_cst: ready() is the re-check of wait()'s store-load.
    const std::error_code error = wait(
        Queue::drainers, [&] { return readers(state_.load(std::memory_order_seq_cst)) == 0; },
        deadline);
    if (error) last_chance = true;
    state = state_.load(std::memory_order_relaxed);  // relaxed: CAS re-validates
  }
  leave_stage_after_timeout(owners);
  return errc::timed_out;
}

// The staged writer gives up (deadline passed while readers still held the lock).
void RwLock::leave_stage_after_timeout(detail::RwOwners* owners) noexcept {
  clear_stage_owner(owners);
  const RwPolicy rw_policy = policy();
  std::uint32_t state = state_.load(std::memory_order_relaxed);  // relaxed: CAS re-validates
  std::uint32_t next = 0;
  for (;;) {
    switch (rw_policy) {
      case RwPolicy::prefer_reader:
        next = state & ~kStaged;
        break;
      case RwPolicy::prefer_writer:
        next = (state & ~kStaged) - kQueuedOne;
        break;
      case RwPolicy::phase_fair:
        // Withdraw. With no reader inside, end the phase as a release would (the flip keeps
        // its readers == 0 precondition). Otherwise free the stage without flipping: the readers
        // queued behind us see "stage free, phase unchanged" and admit themselves into the
        // current read phase, and new readers enter directly. (Counting them here and flipping
        // would break the no-ABA rule: a later writer timing out the same way would flip back
        // before a promoted reader had looked.)
        next = readers(state) == 0 ? end_phase(state) : state & ~kStaged;
        break;
    }
    // seq_cst: store half of the store-load with the parked counts (see wait()).
    if (state_.compare_exchange_weak(state, next, std::memory_order_seq_cst,
                                     std::memory_order_relaxed)) {
      break;
    }
  }
  after_writer_leaves(next);
}

std::error_code RwLock::release_impl(detail::RwOwners* owners, bool annotate) noexcept {
  const RwPolicy rw_policy = policy();
  std::uint32_t state = state_.load(std::memory_order_relaxed);  // relaxed: CAS re-validates
  if (!writer_holds(state)) return errc::not_owner;  // before telling TSan about an unlock
  const unsigned tsan_flags = 0;
  if (annotate) detail::tsan_pre_unlock(this, tsan_flags);
  clear_stage_owner(owners);
  std::uint32_t next = 0;
  for (;;) {
    if (!writer_holds(state)) {
      if (annotate) detail::tsan_post_unlock(this, tsan_flags);
      return errc::not_owner;
    }
    if (readers(state) != 0 || !staged(state) || reserved_set(state) ||
        (rw_policy == RwPolicy::prefer_writer && queued(state) == 0)) {
      if (annotate) detail::tsan_post_unlock(this, tsan_flags);
      return errc::corrupt_state;
    }
    switch (rw_policy) {
      case RwPolicy::prefer_reader:
        next = state & ~(kStaged | kWriterHolds);
        break;
      case RwPolicy::prefer_writer:
        next = (state & ~(kStaged | kWriterHolds)) - kQueuedOne;
        break;
      case RwPolicy::phase_fair:
        next = end_phase(state);
        break;
    }
    // seq_cst: release (our writes happen before the next holder's acquire) and the store half
    // of the notifier's store-load with the parked counts (see wait()).
    if (state_.compare_exchange_weak(state, next, std::memory_order_seq_cst,
                                     std::memory_order_relaxed)) {
      break;
    }
  }
  if (annotate) detail::tsan_post_unlock(this, tsan_flags);
  after_writer_leaves(next);
  return {};
}

// Recovery: the stage's recorded owner died (RobustRwLock claimed its entry). Nobody else can
// take the stage while it is held, and the dead change nothing, so the state is the dead
// writer's: holding (release it as it would have) or waiting for readers (leave as on timeout).
Result<bool> RwLock::release_dead_writer() noexcept {
  // acquire: pairs with the RMWs that changed the state before we read it.
  const std::uint32_t state = state_.load(std::memory_order_acquire);
  if (!staged(state) || reserved_set(state)) return std::error_code(errc::corrupt_state);
  if (writer_holds(state)) {
    if (std::error_code error = release_impl(nullptr, false)) return error;
    return true;
  }
  leave_stage_after_timeout(nullptr);
  return false;
}

// Wakes whoever can move now that a writer left the stage (released or timed out). `next` is the
// state the writer's RMW wrote.
void RwLock::after_writer_leaves(std::uint32_t next) noexcept {
  switch (policy()) {
    case RwPolicy::prefer_reader:
      wake(Queue::readers, INT_MAX);
      wake(Queue::writers, 1);
      return;
    case RwPolicy::prefer_writer:
      if (queued(next) > 0) {
        wake(Queue::writers, 1);  // readers keep waiting while writers are registered
      } else {
        wake(Queue::readers, INT_MAX);
      }
      return;
    case RwPolicy::phase_fair:
      // Promoted readers (phase flipped) or withdrawn queued ones (stage freed with readers
      // inside) must look again; skip the wake only when nobody can have been queued.
      if (!staged(next) && (readers(next) > 0 || queued(next) > 0)) wake(Queue::readers, INT_MAX);
      wake(Queue::writers, 1);  // the stage is free
      return;
  }
}

RwLockSnapshot RwLock::snapshot() const noexcept {
  // acquire / relaxed: a diagnostic view; only state_ is read as one consistent word.
  const std::uint32_t state = state_.load(std::memory_order_acquire);
  RwLockSnapshot view;
  view.readers = readers(state);
  if (policy() == RwPolicy::phase_fair) {
    view.queued_readers = queued(state);
  } else {
    view.queued_writers = queued(state);
  }
  view.writer_staged = staged(state);
  view.writer_holds = writer_holds(state);
  view.parked_readers = readers_parked_.load(std::memory_order_relaxed);
  view.parked_writers = writers_parked_.load(std::memory_order_relaxed);
  view.parked_drainers = drainers_parked_.load(std::memory_order_relaxed);
  return view;
}

}  // namespace xproc::sync
