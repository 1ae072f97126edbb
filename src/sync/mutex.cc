#include "xproc/sync/mutex.h"

#include <algorithm>
#include <climits>
#include <cstddef>
#include <type_traits>

#include "robust_node_internal.h"
#include "xproc/sync/detail/liveness.h"
#include "xproc/sync/detail/mutex_access.h"
#include "xproc/sync/detail/spin.h"
#include "xproc/sys/robust_list.h"

namespace xproc::sync {

namespace detail {

// The layout is a wire format, and the robust node must sit where the kernel looks for the
// word: entry (the node's next field) + futex_offset (-32) = the word.
struct MutexLayout {
  static_assert(std::is_standard_layout_v<Mutex>);
  static_assert(sizeof(Mutex) == 56 && alignof(Mutex) == 8);
  static_assert(offsetof(Mutex, word_) == 0);
  static_assert(offsetof(Mutex, owner_token_) == 8);
  static_assert(offsetof(Mutex, list_prev_) == 24);
  static_assert(offsetof(Mutex, list_next_) == 32);
  static_assert(static_cast<long>(offsetof(Mutex, word_)) -
                    static_cast<long>(offsetof(Mutex, list_next_)) ==
                sys::kGlibcRobustFutexOffset);
  static_assert(offsetof(Mutex, list_next_) - offsetof(Mutex, list_prev_) ==
                static_cast<std::size_t>(sys::kRobustPairNextOffset));
  static_assert(std::atomic<std::uint32_t>::is_always_lock_free &&
                sizeof(std::atomic<std::uint32_t>) == 4);
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

  static RobustNode node(Mutex& mutex) noexcept { return {&mutex.list_prev_, &mutex.list_next_}; }
};

}  // namespace detail

namespace {

constexpr std::uint32_t kMaxBackstopMs = 3'600'000;

// Whether the backstop may mark `observed` owner-died: the owner's process is known dead.
// The record read is ordered after the acquire load that returned `observed` (see
// docs/decisions/0001-robust-ownership.md, "backstop race"), so it is 0/0 or the current
// owner's own record, never a previous owner's.
bool backstop_owner_dead(const std::atomic<std::uint32_t>& tag,
                         const std::atomic<std::uint32_t>& participant) noexcept {
  detail::OwnerRecord record{};
  // relaxed: ordered after the caller's acquire load of the word (see above).
  record.table_tag = tag.load(std::memory_order_relaxed);
  record.participant = participant.load(std::memory_order_relaxed);
  if (record.table_tag == 0 && record.participant == 0) return false;
  return detail::owner_known_dead(record);
}

}  // namespace

OwnerDied::OwnerDied()
    : std::system_error(make_error_code(errc::owner_died), "xproc::sync::Mutex") {}

Mutex::Mutex(Scope scope, MutexOptions options) noexcept
    : kind_(static_cast<std::uint8_t>(options.kind)), scope_(static_cast<std::uint8_t>(scope)) {
  switch (options.robustness) {
    case Robustness::automatic:
      robust_ = scope == Scope::process ? 1 : 0;
      break;
    case Robustness::robust:
      robust_ = 1;
      break;
    case Robustness::not_robust:
      robust_ = 0;
      break;
  }
  spin_setting_ = options.spin_rounds == kMutexDefaultSpinRounds ? 0
                  : options.spin_rounds == UINT32_MAX            ? UINT32_MAX
                                                                 : options.spin_rounds + 1;
  const auto ms = std::clamp<std::chrono::milliseconds::rep>(options.backstop_interval.count(), 1,
                                                             kMaxBackstopMs);
  backstop_ms_ = ms == kMutexDefaultBackstopInterval.count() ? 0 : static_cast<std::uint32_t>(ms);
  detail::tsan_create(this, 0);
}

void Mutex::throw_error(std::error_code ec) {
  if (ec == errc::owner_died) throw OwnerDied();
  throw std::system_error(ec, "xproc::sync::Mutex");
}

bool Mutex::is_locked_by_caller() const noexcept {
  // relaxed (both): a thread compares with its own identity; only it writes that identity
  // here, and it cleared the token before it last released (see the banner in mutex.h).
  const std::uint32_t word = word_.load(std::memory_order_relaxed);
  return owner_tid(word) == static_cast<std::uint32_t>(sys::this_thread_id()) &&
         !is_not_recoverable(word) &&
         owner_token_.load(std::memory_order_relaxed) == sys::this_thread_token();
}

std::error_code Mutex::acquire_until(Deadline deadline) noexcept {
  detail::tsan_pre_lock(this, detail::kTsanTryLock);
  std::error_code ec = acquire_slow(&deadline, false, false);
  tsan_post_acquire(ec);
  return ec;
}

std::error_code Mutex::try_acquire() noexcept {
  detail::tsan_pre_lock(this, detail::kTsanTryLock);
  std::error_code ec = acquire_slow(nullptr, true, false);
  tsan_post_acquire(ec);
  return ec;
}

bool Mutex::try_lock() {
  std::error_code ec = try_acquire();
  if (!ec) return true;
  if (ec == errc::would_block) return false;
  throw_error(ec);
}

std::error_code Mutex::acquire_slow(const Deadline* deadline, bool try_only,
                                    bool contended) noexcept {
  const auto tid = static_cast<std::uint32_t>(sys::this_thread_id());
  const std::uint64_t token = sys::this_thread_token();
  // relaxed: only compared with the caller's own identity (see is_locked_by_caller()).
  std::uint32_t word = word_.load(std::memory_order_relaxed);
  if (owner_tid(word) == tid && !is_not_recoverable(word) &&
      owner_token_.load(std::memory_order_relaxed) == token) {
    if (kind() == MutexKind::recursive) {
      if (depth_ == UINT32_MAX) return errc::limit_reached;
      ++depth_;
      return {};
    }
    return try_only ? errc::would_block : errc::deadlock;
  }

  sys::RobustListHead* const head = robust_ ? sys::this_thread_robust_list() : nullptr;
  const detail::RobustNode node = detail::MutexLayout::node(*this);
  if (head != nullptr) detail::set_pending(head, node);  // crash protocol step 1

  bool held = false;  // acquired (possibly owner-died)
  bool slept = contended;
  bool spun = contended || spin_rounds() == 0;
  std::error_code result;
  for (;;) {
    if (is_not_recoverable(word)) {
      result = errc::not_recoverable;
      break;
    }
    if (is_unlocked(word)) {
      // Keep OWNER_DIED (the new owner holds it inconsistent) and WAITERS; a thread that has
      // slept sets WAITERS, as it cannot know whether others still sleep.
      const std::uint32_t desired = tid | word | (slept ? kWaiters : 0);
      // acquire: pairs with the release exchange of the previous owner's release (and with the
      // kernel's/backstop's owner-died update); relaxed on failure: we re-examine the value.
      if (word_.compare_exchange_weak(word, desired, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
        held = true;
        if (owner_died(word)) [[unlikely]]
          result = errc::owner_died;
        break;
      }
      continue;
    }
    if ((word & kOwnerDied) != 0 && (word & kTidMask) != 0 && !robust_) {
      result = errc::corrupt_state;  // only robust words are ever marked owner-died
      break;
    }
    if (try_only) {
      result = errc::would_block;
      break;
    }
    if (deadline != nullptr && Clock::now() >= *deadline) {
      result = errc::timed_out;
      break;
    }
    if (!spun) {
      // Adaptive: spin only while nobody is parked. Once WAITERS is set the lock is contended
      // and the hand-over goes through the futex anyway, so spinning would only burn a CPU
      // (Rust std's futex mutex stops its spin the same way).
      spun = true;
      if ((word & kWaiters) == 0) {
        detail::spin_until(
            [&] {
              // relaxed: a hint; the CAS above acquires.
              word = word_.load(std::memory_order_relaxed);
              return is_unlocked(word) || is_not_recoverable(word) || (word & kWaiters) != 0;
            },
            spin_rounds());
        continue;
      }
    }
    if ((word & kWaiters) == 0) {
      // relaxed: announcing a waiter publishes nothing; the futex_wait below re-checks the
      // value atomically in the kernel, and the owner's exchange reads the bit.
      if (!word_.compare_exchange_weak(word, word | kWaiters, std::memory_order_relaxed)) {
        continue;
      }
      word |= kWaiters;
    }
    slept = true;
    // A robust waiter never sleeps longer than the backstop interval: besides the liveness
    // check below, this recovers a wake-up lost to a death (a woken waiter killed before it
    // re-acquired, or an unlocker killed between its exchange and its FUTEX_WAKE while another
    // thread re-took the lock without WAITERS): the decision doc's crash protocol.
    Deadline wake_at{};
    bool backstop = false;
    if (robust_) {
      const std::uint32_t ms =
          backstop_ms_ == 0 ? static_cast<std::uint32_t>(kMutexDefaultBackstopInterval.count())
                            : backstop_ms_;
      wake_at = Clock::now() + std::chrono::milliseconds(ms);
      backstop = true;
      if (deadline != nullptr && *deadline < wake_at) {
        wake_at = *deadline;
        backstop = false;
      }
    }
    std::error_code ec;
    if (backstop) {
      ec = sys::futex_wait(word_, word, futex_scope(), wake_at);
    } else if (deadline != nullptr) {
      ec = sys::futex_wait(word_, word, futex_scope(), *deadline);
    } else {
      ec = sys::futex_wait(word_, word, futex_scope());
    }
    if (ec == errc::timed_out && backstop) {
      // acquire: makes the owner-record read below see the record of the owner whose RMW we
      // read, or 0/0; never an earlier owner's (release-sequence argument in the decision doc).
      const std::uint32_t now = word_.load(std::memory_order_acquire);
      if (now == word && !is_unlocked(now) && !owner_died(now) &&
          backstop_owner_dead(owner_table_tag_, owner_participant_)) {
        std::uint32_t expected = now;
        // relaxed: the dead owner published nothing we could use; whoever acquires next
        // acquires from this RMW's value with its own acquire CAS.
        if (word_.compare_exchange_strong(expected, kOwnerDied | kWaiters,
                                          std::memory_order_relaxed)) {
          (void)sys::futex_wake(word_, 1, futex_scope());
        }
      }
    }
    (void)ec;  // wake-up, spurious wake-up, changed value or timeout: re-examine the word
    // relaxed: a hint; the CAS acquires.
    word = word_.load(std::memory_order_relaxed);
  }

  if (held) {
    if (head != nullptr) detail::link_at_head(head, node);  // step 3
    // relaxed: read only for comparison with the reader's own token.
    owner_token_.store(token, std::memory_order_relaxed);
    depth_ = 1;
    if (robust_) {
      const detail::OwnerRecord record = detail::this_process_owner_record();
      // relaxed: published to backstop checkers by the release RMW of make_consistent() or
      // ordered by the release sequence (decision doc); cleared before our release.
      owner_table_tag_.store(record.table_tag, std::memory_order_relaxed);
      owner_participant_.store(record.participant, std::memory_order_relaxed);
    }
  }
  if (head != nullptr) detail::clear_pending(head);  // step 4
  return result;
}

std::error_code Mutex::acquire_robust() noexcept {
  sys::RobustListHead* const head = sys::this_thread_robust_list();
  // relaxed: a hint; the CAS below acquires.
  if (head == nullptr || word_.load(std::memory_order_relaxed) != 0) [[unlikely]] {
    return acquire_slow(nullptr, false, false);  // owned (maybe by us), contended, or special
  }
  const auto tid = static_cast<std::uint32_t>(sys::this_thread_id());
  const detail::RobustNode node = detail::MutexLayout::node(*this);
  detail::set_pending(head, node);  // crash protocol step 1
  std::uint32_t expected = 0;
  // acquire: pairs with the release exchange of the previous owner's release; relaxed on
  // failure: acquire_slow() starts over (and announces the pending operation again).
  if (!word_.compare_exchange_strong(expected, tid, std::memory_order_acquire,
                                     std::memory_order_relaxed)) [[unlikely]] {
    detail::clear_pending(head);
    return acquire_slow(nullptr, false, false);
  }
  detail::link_at_head(head, node);  // step 3
  // relaxed (all four): as in acquire_slow() after acquiring.
  owner_token_.store(sys::this_thread_token(), std::memory_order_relaxed);
  depth_ = 1;
  const detail::OwnerRecord record = detail::this_process_owner_record();
  owner_table_tag_.store(record.table_tag, std::memory_order_relaxed);
  owner_participant_.store(record.participant, std::memory_order_relaxed);
  detail::clear_pending(head);  // step 4
  return {};
}

std::error_code Mutex::release_slow() noexcept {
  if (robust_ == 0) return release_impl(false);
  // Robust, held once, consistent, no waiter announced: straight-line release.
  const auto tid = static_cast<std::uint32_t>(sys::this_thread_id());
  sys::RobustListHead* const head = sys::this_thread_robust_list();
  // relaxed (both): compared with our own identity only (see is_locked_by_caller()).
  if (word_.load(std::memory_order_relaxed) != tid || head == nullptr ||
      owner_token_.load(std::memory_order_relaxed) != sys::this_thread_token() || depth_ != 1)
      [[unlikely]] {
    return release_impl(false);
  }
  detail::tsan_pre_unlock(this, 0);
  depth_ = 0;
  // relaxed (all three): ordered before the release exchange below, which publishes them.
  owner_table_tag_.store(0, std::memory_order_relaxed);
  owner_participant_.store(0, std::memory_order_relaxed);
  owner_token_.store(0, std::memory_order_relaxed);
  const detail::RobustNode node = detail::MutexLayout::node(*this);
  detail::set_pending(head, node);  // unlock step 1
  detail::unlink(node);             // unlock step 2
  // release: publishes the protected data; pairs with the acquire CAS of the next owner.
  // WAITERS may have been set since the load above: the exchange reads it.
  const std::uint32_t old = word_.exchange(0, std::memory_order_release);
  if ((old & kWaiters) != 0) (void)sys::futex_wake(word_, 1, futex_scope());
  detail::clear_pending(head);  // unlock step 6
  detail::tsan_post_unlock(this, 0);
  return {};
}

std::error_code Mutex::release_impl(bool fully) noexcept {
  const auto tid = static_cast<std::uint32_t>(sys::this_thread_id());
  // relaxed: compared with our own identity only.
  const std::uint32_t word = word_.load(std::memory_order_relaxed);
  const bool owned = owner_tid(word) == tid && !is_not_recoverable(word) &&
                     owner_token_.load(std::memory_order_relaxed) == sys::this_thread_token();
  if (!owned) return errc::not_owner;
  // TSan counts recursive locks: a full release (condvar wait) drops every level at once.
  const unsigned tsan_flags = fully ? detail::kTsanRecursiveUnlock : 0;
  if (fully) {
    (void)detail::tsan_pre_unlock_all(this);  // the levels are depth_, restored by reacquire()
  } else {
    detail::tsan_pre_unlock(this, 0);
  }
  if (!fully && depth_ > 1) {
    --depth_;
    detail::tsan_post_unlock(this, tsan_flags);
    return {};
  }
  depth_ = 0;
  const bool inconsistent = owner_died(word);
  if (robust_) {
    // relaxed: ordered before the release exchange below, which publishes the clearing.
    owner_table_tag_.store(0, std::memory_order_relaxed);
    owner_participant_.store(0, std::memory_order_relaxed);
  }
  // relaxed: published by the release exchange below.
  owner_token_.store(0, std::memory_order_relaxed);
  sys::RobustListHead* const head = robust_ ? sys::this_thread_robust_list() : nullptr;
  const detail::RobustNode node = detail::MutexLayout::node(*this);
  if (head != nullptr) {
    detail::set_pending(head, node);  // unlock step 1
    detail::unlink(node);             // unlock step 2
  }
  // release: publishes the protected data (and the cleared token/record); pairs with the
  // acquire CAS of the next owner.
  const std::uint32_t old =
      word_.exchange(inconsistent ? kNotRecoverable : 0, std::memory_order_release);
  if (inconsistent) {
    (void)sys::futex_wake(word_, INT_MAX, futex_scope());  // all must see not_recoverable
  } else if ((old & kWaiters) != 0) {
    (void)sys::futex_wake(word_, 1, futex_scope());
  }
  if (head != nullptr) detail::clear_pending(head);  // unlock step 6
  detail::tsan_post_unlock(this, tsan_flags);
  return {};
}

std::error_code Mutex::make_consistent() noexcept {
  if (!is_locked_by_caller()) return errc::not_owner;
  // relaxed: the owner's own view.
  const std::uint32_t word = word_.load(std::memory_order_relaxed);
  if (!owner_died(word)) return errc::invalid_argument;
  // release: publishes this owner's record (written after its acquire) to a backstop checker
  // that reads a word without OWNER_DIED; pairs with its acquire load.
  word_.fetch_and(~kOwnerDied, std::memory_order_release);
  return {};
}

}  // namespace xproc::sync

namespace xproc::sync::detail {

bool MutexAccess::mark_waiters(Mutex& mutex) noexcept {
  // relaxed: a hint; the CAS re-validates.
  std::uint32_t word = mutex.word_.load(std::memory_order_relaxed);
  for (;;) {
    if (Mutex::is_unlocked(word) || Mutex::is_not_recoverable(word)) return false;
    if ((word & Mutex::kWaiters) != 0) return true;
    // relaxed: the bit publishes nothing; the owner's release exchange reads it.
    if (mutex.word_.compare_exchange_weak(word, word | Mutex::kWaiters,
                                          std::memory_order_relaxed)) {
      return true;
    }
  }
}

std::error_code MutexAccess::lock_contended(Mutex& mutex) noexcept {
  detail::tsan_pre_lock(&mutex, detail::kTsanTryLock);
  std::error_code ec = mutex.acquire_slow(nullptr, false, true);
  mutex.tsan_post_acquire(ec);
  return ec;
}

std::error_code MutexAccess::release_fully(Mutex& mutex, Saved& saved) noexcept {
  const std::uint32_t depth = mutex.depth_;
  if (!mutex.is_locked_by_caller()) return errc::not_owner;
  std::error_code ec = mutex.release_impl(true);
  if (!ec) saved.depth = depth == 0 ? 1 : depth;
  return ec;
}

void MutexAccess::set_pending(Mutex& mutex) noexcept {
  if (!mutex.robust()) return;
  sys::RobustListHead* const head = sys::this_thread_robust_list();
  if (head != nullptr) detail::set_pending(head, MutexLayout::node(mutex));
}

std::error_code MutexAccess::reacquire(Mutex& mutex, Saved saved, bool contended) noexcept {
  detail::tsan_pre_lock(&mutex, detail::kTsanTryLock);
  std::error_code ec = mutex.acquire_slow(nullptr, false, contended);
  const bool held = !ec || ec == errc::owner_died;
  if (held) mutex.depth_ = saved.depth == 0 ? 1 : saved.depth;
  if (ec == errc::owner_died) {  // TSan: the dead owner never released it
    detail::tsan_destroy(&mutex);
    detail::tsan_create(&mutex, 0);
  }
  // TSan: restores every recursion level at once (release_fully() dropped them all).
  if (held) {
    detail::tsan_post_lock_levels(&mutex, detail::kTsanTryLock,
                                  static_cast<int>(std::min<std::uint32_t>(mutex.depth_, INT_MAX)));
  } else {
    detail::tsan_post_lock(&mutex, detail::kTsanTryLock | detail::kTsanTryLockFailed);
  }
  return ec;
}

}  // namespace xproc::sync::detail
