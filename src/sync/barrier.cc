// xproc::sync::Barrier: arrival, completion and parking. Contract in barrier.h.
#include "xproc/sync/barrier.h"

#include <algorithm>

#include "xproc/sync/detail/quiesce.h"
#include "xproc/sync/detail/spin.h"
#include "xproc/sys/futex.h"

namespace xproc::sync {

namespace {
constexpr int kWakeAll = 0x7fffffff;
}

Barrier::Barrier(Scope scope, std::uint32_t count, std::uint32_t spin_rounds)
    : count_(count), scope_(static_cast<std::uint32_t>(scope)), spin_rounds_(spin_rounds) {
  if (count == 0 || count > kMaxCount) {
    throw std::system_error(make_error_code(errc::invalid_argument));
  }
}

Barrier::~Barrier() {
  (void)detail::quiesce([this] { return inside() == 0; });
}

Result<Arrival> Barrier::arrive(const Deadline* deadline) noexcept {
  // relaxed: sequenced before our arrival's release CAS on state_, so a thread that saw this
  // generation complete (it acquired the flip, which read our arrival) sees this increment.
  inside_.fetch_add(1, std::memory_order_relaxed);
  Result<Arrival> arrival = arrive_counted(deadline);
  // release: our last access; our reads of the barrier happen-before a destroyer's acquire
  // load of 0 (inside()).
  inside_.fetch_sub(1, std::memory_order_release);
  return arrival;
}

Result<Arrival> Barrier::arrive_counted(const Deadline* deadline) noexcept {
  const std::uint32_t count = count_;
  if (count == 0) return make_error_code(errc::invalid_argument);
  if (count > kMaxCount) return make_error_code(errc::corrupt_state);
  // relaxed: only the starting point of the CAS loop.
  std::uint32_t state = state_.load(std::memory_order_relaxed);
  for (;;) {
    const std::uint32_t arrived = arrived_of(state);
    if (arrived >= count) return make_error_code(errc::corrupt_state);
    if (arrived + 1 == count) {
      // The last arrival: flip the generation, reset the count. seq_cst: acquire reads every
      // earlier arrival's release (an RMW chain on state_), release publishes them all to the
      // waiters' acquire loads; seq_cst orders it before the load of waiters_ below (store-
      // load, see wait_generation()).
      const std::uint32_t next = generation_of(state) ^ kGenerationBit;
      if (state_.compare_exchange_weak(state, next, std::memory_order_seq_cst,
                                       std::memory_order_relaxed)) {
        // seq_cst: the load half of the store-load pairing with the waiters' announcement.
        if (waiters_.load(std::memory_order_seq_cst) != 0) {
          (void)sys::futex_wake(state_, kWakeAll, futex_scope());
        }
        return Arrival::serial;
      }
    } else {
      // release: publishes this participant's writes to the last arriver (RMW chain);
      // acquire is not needed here (wait_generation() acquires the flip).
      if (state_.compare_exchange_weak(state, state + 1, std::memory_order_release,
                                       std::memory_order_relaxed)) {
        const std::error_code error = wait_generation(generation_of(state), deadline);
        if (error) return error;
        return Arrival::ordinary;
      }
    }
  }
}

std::error_code Barrier::wait_generation(std::uint32_t generation,
                                         const Deadline* deadline) noexcept {
  // acquire: pairs with the last arriver's release CAS (the flip).
  auto passed = [&] { return generation_of(state_.load(std::memory_order_acquire)) != generation; };
  if (detail::spin_until(passed, spin_rounds_)) return {};
  // Announce (A), then re-check state_ (B). The last arriver does its flip (D), then loads
  // waiters_ (F). If F missed A, F < A < B in the seq_cst total order; if B also missed the
  // flip, B < D < F: a cycle. So the last arriver wakes us or we see the flip; a flip after B
  // changes state_, so futex_wait(state_, B's value) returns at once. seq_cst: store-load.
  waiters_.fetch_add(1, std::memory_order_seq_cst);
  const bool sliced = scope_ != 0;
  std::error_code result;
  for (;;) {
    // seq_cst: the re-check B above (also an acquire of the flip).
    std::uint32_t state = state_.load(std::memory_order_seq_cst);
    if (generation_of(state) != generation) break;
    if (deadline != nullptr && Clock::now() >= *deadline) {
      // Withdraw our arrival, unless the generation completes first. acquire (both orders):
      // a failure that reads the flip must see the other participants' writes; a successful
      // withdrawal publishes nothing.
      while (generation_of(state) == generation) {
        if (arrived_of(state) == 0) {
          result = make_error_code(errc::corrupt_state);  // we are counted: cannot be 0
          break;
        }
        if (state_.compare_exchange_weak(state, state - 1, std::memory_order_acquire,
                                         std::memory_order_acquire)) {
          result = make_error_code(errc::timed_out);
          break;
        }
      }
      // Loop left without a result: a failed CAS read the flip (acquire): passed, result {}.
      break;
    }
    Deadline slice{};
    const Deadline* park_deadline = deadline;
    if (sliced) {
      // A last arriver may die between its flip and its wake: re-check every kDeathRecheck.
      slice = Clock::now() + kDeathRecheck;
      if (deadline != nullptr) slice = std::min(slice, *deadline);
      park_deadline = &slice;
    }
    if (park_deadline != nullptr) {
      (void)sys::futex_wait(state_, state, futex_scope(), *park_deadline);
    } else {
      (void)sys::futex_wait(state_, state, futex_scope());
    }
  }
  // relaxed: a counter for the last arriver only; a stale value costs a spare syscall.
  waiters_.fetch_sub(1, std::memory_order_relaxed);
  return result;
}

}  // namespace xproc::sync
