#pragma once
// xproc::sync::Semaphore: a counting semaphore (0 .. kMaxValue) for threads of one process
// (Scope::thread) or processes sharing MAP_SHARED memory (Scope::process).
//
// Two faces over one state:
//   * error-code API: wait(), try_wait(), wait_until(), wait_for(), post(n), value();
//   * std::counting_semaphore's members: acquire(), try_acquire(), try_acquire_for/until(),
//     release(n), max(); they return void/bool and throw std::system_error(xproc::errc) for what
//     std leaves undefined (release beyond max(), a corrupt word).
// A unit posted by post()/release() happens-before the return of the wait/acquire that takes it
// (release/acquire on value_), so a semaphore also publishes data.
// No owner, no FIFO: a thread arriving while others sleep may take a unit first (barging).
//
// Thread- and process-safety: every member may be called concurrently by any thread of any
// process that maps the object. Blocking: wait/acquire (bounded spin, then futex park); post and
// the try members never block.
// Failures: wait(): {}, corrupt_state (value_ > kMaxValue: a peer wrote garbage).
//   try_wait(): {}, would_block, corrupt_state. wait_until(): {}, timed_out, corrupt_state.
//   post(n): {}, invalid_argument (n == 0 or n > kMaxValue), limit_reached (value + n would
//   exceed kMaxValue; nothing posted), corrupt_state.
// Deaths (SIGKILL at any instant; semaphores have no owner, so a unit taken by a process that
// dies is gone, as with POSIX semaphores):
//   * waiter killed while announced or parked: waiters_ stays one too high. A later post then
//     makes one futex wake syscall that may wake nobody: a cost, never a lost unit or a blocked
//     survivor (a stale count makes posters do more, never less).
//   * waiter woken by a post and killed before it takes the unit: the unit stays in value_, and
//     other parked waiters would sleep until the next post. Scope::process waiters therefore park
//     in slices of kDeathRecheck and re-check value_, so a survivor takes that unit within
//     kDeathRecheck. (Threads of one process cannot die alone: Scope::thread parks unsliced.)
//   * waiter killed after taking the unit (its CAS): the unit is consumed.
//   * poster killed before its CAS: nothing posted; after it, before the wake: the unit is in
//     value_ and is found by a non-parked waiter at once, by parked ones within kDeathRecheck.
// fork(): a Scope::process semaphore keeps working (the child is one more participant). The
//   child's copy of a Scope::thread semaphore keeps its value; its waiters_ may count the
//   parent's waiters (extra syscalls only).

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <system_error>
#include <type_traits>

#include "xproc/sync/scope.h"
#include "xproc/sys/error.h"

namespace xproc::sync {

inline constexpr std::uint32_t kSemaphoreDefaultSpinRounds = 4;

class Semaphore {
 public:
  // The largest value, as POSIX's SEM_VALUE_MAX on Linux.
  static constexpr std::uint32_t kMaxValue = 0x7fffffff;
  // How often a Scope::process waiter wakes to re-check value_ (see Deaths above).
  static constexpr std::chrono::milliseconds kDeathRecheck{100};

  // Scope::thread, value 0: the state of zero-filled memory.
  constexpr Semaphore() noexcept = default;
  // Throws std::system_error(errc::invalid_argument) when initial > kMaxValue.
  explicit Semaphore(Scope scope, std::uint32_t initial = 0,
                     std::uint32_t spin_rounds = kSemaphoreDefaultSpinRounds);
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;

  // ---- error-code API ----
  [[nodiscard]] std::error_code try_wait() noexcept {
    const Take take = try_take();
    return take == Take::taken  ? std::error_code{}
           : take == Take::zero ? make_error_code(errc::would_block)
                                : make_error_code(errc::corrupt_state);
  }
  [[nodiscard]] std::error_code wait() noexcept {
    if (try_take() == Take::taken) return {};
    return wait_slow(nullptr);
  }
  [[nodiscard]] std::error_code wait_until(Deadline deadline) noexcept {
    if (try_take() == Take::taken) return {};
    return wait_slow(&deadline);
  }
  template <class Rep, class Period>
  [[nodiscard]] std::error_code wait_for(std::chrono::duration<Rep, Period> timeout) noexcept {
    return wait_until(Clock::now() + std::chrono::ceil<Clock::duration>(timeout));
  }
  [[nodiscard]] std::error_code post(std::uint32_t n = 1) noexcept;
  // A snapshot (relaxed); may be stale at once.
  std::uint32_t value() const noexcept { return value_.load(std::memory_order_relaxed); }
  // Announced waiters, a snapshot including dead ones (diagnostics and tests).
  std::uint32_t waiters() const noexcept { return waiters_.load(std::memory_order_relaxed); }

  // ---- std::counting_semaphore members ----
  static constexpr std::ptrdiff_t max() noexcept { return kMaxValue; }
  void acquire();                      // throws std::system_error(corrupt_state)
  bool try_acquire() noexcept;         // false: zero (or corrupt)
  void release(std::ptrdiff_t n = 1);  // throws invalid_argument / limit_reached / corrupt_state
  template <class Clock2, class Duration>
  bool try_acquire_until(const std::chrono::time_point<Clock2, Duration>& deadline) {
    if constexpr (std::is_same_v<Clock2, Clock>) {
      return acquire_result(wait_until(std::chrono::time_point_cast<Clock::duration>(deadline)));
    } else {
      return try_acquire_for(deadline - Clock2::now());
    }
  }
  template <class Rep, class Period>
  bool try_acquire_for(const std::chrono::duration<Rep, Period>& timeout) {
    return acquire_result(wait_for(timeout));
  }

  Scope scope() const noexcept { return static_cast<Scope>(scope_); }

 private:
  enum class Take : std::uint8_t { taken, zero, corrupt };

  Take try_take() noexcept {
    // seq_cst: in wait_slow() this is the re-check after announcing (store-load with
    // waiters_, see there); on x86 a seq_cst load is a plain load.
    std::uint32_t current = value_.load(std::memory_order_seq_cst);
    for (;;) {
      if (current == 0) return Take::zero;
      if (current > kMaxValue) return Take::corrupt;
      // acquire: pairs with the release half of post()'s RMW: the poster's writes before
      // post() happen-before our return. relaxed on failure: we only retry.
      if (value_.compare_exchange_weak(current, current - 1, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        return Take::taken;
      }
    }
  }
  std::error_code wait_slow(const Deadline* deadline) noexcept;
  static bool acquire_result(std::error_code error);

  // Layout (a wire format):
  // +0 value_: the futex word; the count of units, 0 .. kMaxValue. Bit 31 set = corrupt.
  std::atomic<std::uint32_t> value_{0};
  // +4 waiters_: waiters between announcing and leaving wait_slow(); any value is valid
  //    (dead waiters leave it high: extra syscalls only).
  std::atomic<std::uint32_t> waiters_{0};
  // +8 scope_: Scope (0 thread; anything else is treated as process: a shared futex also works
  //    on private memory).
  std::uint32_t scope_ = 0;
  // +12 spin_rounds_: detail::spin_until rounds before announcing and parking.
  std::uint32_t spin_rounds_ = 0;

  sys::FutexScope futex_scope() const noexcept {
    return scope_ == 0 ? sys::FutexScope::process_private : sys::FutexScope::process_shared;
  }
};

static_assert(sizeof(Semaphore) == 16);
static_assert(alignof(Semaphore) == 4);
static_assert(std::is_standard_layout_v<Semaphore>);

}  // namespace xproc::sync
