#pragma once
// Helpers of the C API's tests: CLOCK_MONOTONIC deadlines as the C API takes them.

#include <time.h>

#include <chrono>

namespace xproc::test {

// The absolute CLOCK_MONOTONIC time `from_now` from now (negative: in the past).
inline struct timespec monotonic_in(std::chrono::nanoseconds from_now) {
  struct timespec now {};
  clock_gettime(CLOCK_MONOTONIC, &now);
  const auto total =
      std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec) + from_now;
  struct timespec result {};
  result.tv_sec = static_cast<time_t>(std::chrono::floor<std::chrono::seconds>(total).count());
  result.tv_nsec =
      static_cast<long>((total - std::chrono::floor<std::chrono::seconds>(total)).count());
  return result;
}

inline struct timespec bad_timespec() {
  struct timespec result = monotonic_in(std::chrono::seconds(1));
  result.tv_nsec = 1'000'000'000L;
  return result;
}

}  // namespace xproc::test
