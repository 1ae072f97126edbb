// xproc::sync::Semaphore: the slow paths (parking, posting with wake-up). Contract in
// semaphore.h.
#include "xproc/sync/semaphore.h"

#include <algorithm>
#include <limits>

#include "xproc/sync/detail/spin.h"
#include "xproc/sys/futex.h"

namespace xproc::sync {

Semaphore::Semaphore(Scope scope, std::uint32_t initial, std::uint32_t spin_rounds)
    : value_(initial), scope_(static_cast<std::uint32_t>(scope)), spin_rounds_(spin_rounds) {
  if (initial > kMaxValue) throw std::system_error(make_error_code(errc::invalid_argument));
}

std::error_code Semaphore::wait_slow(const Deadline* deadline) noexcept {
  // Bounded spin before announcing: a post already on its way is caught without any syscall.
  Take take = Take::zero;
  detail::spin_until([&] { return (take = try_take()) != Take::zero; }, spin_rounds_);
  if (take == Take::taken) return {};
  if (take == Take::corrupt) return make_error_code(errc::corrupt_state);

  // Announce (A), then re-check value_ (B, the seq_cst load in try_take()). post() does
  // (D) its seq_cst RMW of value_, then (F) a seq_cst load of waiters_. If F missed A then
  // F < A < B in the single total order S, and if B also read 0 (before D) then B < D < F:
  // a cycle. So either the poster sees us and wakes, or we see its unit. A unit added after B
  // but before we park changes value_ from 0, so futex_wait(value_, 0) returns at once.
  // seq_cst: that store-load needs it.
  waiters_.fetch_add(1, std::memory_order_seq_cst);
  const bool sliced = scope_ != 0;
  std::error_code result;
  for (;;) {
    take = try_take();
    if (take == Take::taken) break;
    if (take == Take::corrupt) {
      result = make_error_code(errc::corrupt_state);
      break;
    }
    if (deadline != nullptr && Clock::now() >= *deadline) {
      result = make_error_code(errc::timed_out);
      break;
    }
    if (sliced) {
      // A woken waiter may have died before taking its unit: re-check every kDeathRecheck.
      Deadline slice = Clock::now() + kDeathRecheck;
      if (deadline != nullptr) slice = std::min(slice, *deadline);
      (void)sys::futex_wait(value_, 0, futex_scope(), slice);
    } else if (deadline != nullptr) {
      (void)sys::futex_wait(value_, 0, futex_scope(), *deadline);
    } else {
      (void)sys::futex_wait(value_, 0, futex_scope());
    }
    // Woken, value changed, timed out or spurious: the loop re-checks value_ and the deadline.
  }
  // relaxed: a counter for posters only; leaving costs them at most a spare syscall.
  waiters_.fetch_sub(1, std::memory_order_relaxed);
  return result;
}

std::error_code Semaphore::post(std::uint32_t n) noexcept {
  if (n == 0 || n > kMaxValue) return make_error_code(errc::invalid_argument);
  // relaxed: only the starting point of the CAS loop.
  std::uint32_t current = value_.load(std::memory_order_relaxed);
  do {
    if (current > kMaxValue) return make_error_code(errc::corrupt_state);
    if (n > kMaxValue - current) return make_error_code(errc::limit_reached);
    // seq_cst: release publishes the poster's writes to the taker (acquire CAS in try_take());
    // seq_cst orders it before the load of waiters_ below (store-load, see wait_slow()).
  } while (!value_.compare_exchange_weak(current, current + n, std::memory_order_seq_cst,
                                         std::memory_order_relaxed));
  // seq_cst: the load half of the store-load pairing with wait_slow()'s announcement.
  const std::uint32_t waiting = waiters_.load(std::memory_order_seq_cst);
  if (waiting != 0) {
    const auto count = std::min<std::uint32_t>(n, waiting);
    (void)sys::futex_wake(value_, static_cast<int>(count), futex_scope());
  }
  return {};
}

void Semaphore::acquire() {
  const std::error_code error = wait();
  if (error) throw std::system_error(error);
}

bool Semaphore::try_acquire() noexcept {
  return try_take() == Take::taken;
}

void Semaphore::release(std::ptrdiff_t n) {
  if (n <= 0 || n > static_cast<std::ptrdiff_t>(kMaxValue)) {
    throw std::system_error(make_error_code(errc::invalid_argument));
  }
  const std::error_code error = post(static_cast<std::uint32_t>(n));
  if (error) throw std::system_error(error);
}

bool Semaphore::acquire_result(std::error_code error) {
  if (!error) return true;
  if (error == errc::timed_out) return false;
  throw std::system_error(error);
}

}  // namespace xproc::sync
