// Thread-level tests of xproc::sync::Semaphore: exact accounting, no lost wake-up, timed waits,
// limits and errors, the std::counting_semaphore face.
#include "xproc/sync/semaphore.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "child_process.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

TEST(Semaphore, ZeroFilledIsThreadScopeWithValueZero) {
  alignas(Semaphore) unsigned char bytes[sizeof(Semaphore)] = {};
  auto* sem = reinterpret_cast<Semaphore*>(bytes);
  EXPECT_EQ(sem->scope(), Scope::thread);
  EXPECT_EQ(sem->value(), 0u);
  EXPECT_EQ(sem->try_wait(), errc::would_block);
  EXPECT_FALSE(sem->post());
  EXPECT_FALSE(sem->try_wait());
}

TEST(Semaphore, InitialValueAboveMaxThrowsInvalidArgument) {
  EXPECT_THROW(Semaphore(Scope::thread, Semaphore::kMaxValue + 1), std::system_error);
  Semaphore at_max(Scope::thread, Semaphore::kMaxValue);
  EXPECT_EQ(at_max.value(), Semaphore::kMaxValue);
  EXPECT_EQ(Semaphore::max(), 0x7fffffff);
}

TEST(Semaphore, TryWaitTakesExactlyTheInitialUnits) {
  Semaphore sem(Scope::thread, 3);
  EXPECT_FALSE(sem.try_wait());
  EXPECT_FALSE(sem.try_wait());
  EXPECT_TRUE(sem.try_acquire());
  EXPECT_EQ(sem.try_wait(), errc::would_block);
  EXPECT_FALSE(sem.try_acquire());
  EXPECT_EQ(sem.value(), 0u);
}

TEST(Semaphore, PostOfZeroOrAboveMaxIsInvalidArgument) {
  Semaphore sem;
  EXPECT_EQ(sem.post(0), errc::invalid_argument);
  EXPECT_EQ(sem.post(Semaphore::kMaxValue + 1), errc::invalid_argument);
  EXPECT_THROW(sem.release(0), std::system_error);
  EXPECT_THROW(sem.release(-1), std::system_error);
  EXPECT_EQ(sem.value(), 0u);
}

TEST(Semaphore, PostBeyondMaxReturnsLimitReachedAndPostsNothing) {
  Semaphore sem(Scope::thread, Semaphore::kMaxValue - 2);
  EXPECT_EQ(sem.post(3), errc::limit_reached);
  EXPECT_EQ(sem.value(), Semaphore::kMaxValue - 2);
  EXPECT_FALSE(sem.post(2));
  EXPECT_EQ(sem.value(), Semaphore::kMaxValue);
  EXPECT_EQ(sem.post(), errc::limit_reached);
  try {
    sem.release();
    FAIL() << "release beyond max did not throw";
  } catch (const std::system_error& error) {
    EXPECT_EQ(error.code(), errc::limit_reached);
  }
}

TEST(Semaphore, PostOfManyUnitsAddsThemAll) {
  Semaphore sem;
  EXPECT_FALSE(sem.post(5));
  sem.release(2);
  EXPECT_EQ(sem.value(), 7u);
}

TEST(Semaphore, CorruptValueIsReportedNotTrusted) {
  Semaphore sem;
  const std::uint32_t garbage = 0x80000005u;
  std::memcpy(static_cast<void*>(&sem), &garbage, sizeof garbage);  // value_ is at offset 0
  EXPECT_EQ(sem.try_wait(), errc::corrupt_state);
  EXPECT_EQ(sem.wait(), errc::corrupt_state);
  EXPECT_EQ(sem.post(), errc::corrupt_state);
  EXPECT_THROW(sem.acquire(), std::system_error);
}

TEST(Semaphore, TimedWaitReturnsTimedOutAtAPastDeadline) {
  Semaphore sem;
  EXPECT_EQ(sem.wait_until(Clock::now() - 1s), errc::timed_out);
  EXPECT_FALSE(sem.try_acquire_until(Clock::now() - 1s));
}

TEST(Semaphore, TimedWaitTakesAnAvailableUnitEvenAtAPastDeadline) {
  Semaphore sem(Scope::thread, 1);
  EXPECT_FALSE(sem.wait_until(Clock::now() - 1s));
  EXPECT_EQ(sem.value(), 0u);
}

TEST(Semaphore, TimedWaitReturnsTimedOutNoEarlierThanANearDeadline) {
  Semaphore sem;
  const auto start = Clock::now();
  EXPECT_EQ(sem.wait_for(30ms), errc::timed_out);
  EXPECT_GE(Clock::now() - start, 30ms);
  EXPECT_EQ(sem.waiters(), 0u);
  EXPECT_FALSE(sem.try_acquire_for(5ms));
  EXPECT_FALSE(sem.try_acquire_until(std::chrono::system_clock::now() + 5ms));
}

TEST(Semaphore, FarDeadlineWaitTakesAUnitPostedLater) {
  Semaphore sem;
  std::atomic<bool> started{false};
  std::thread waiter([&] {
    started.store(true);
    EXPECT_FALSE(sem.wait_until(Clock::now() + 3600s));
  });
  while (!started.load()) std::this_thread::yield();
  EXPECT_FALSE(sem.post());
  waiter.join();
  EXPECT_EQ(sem.value(), 0u);
}

TEST(Semaphore, PingPongWithTwoSemaphoresLosesNoWakeUp) {
  Semaphore ping(Scope::thread, 0, 0);
  Semaphore pong(Scope::thread, 0, 0);
  const long rounds = test::scaled(20000);
  long exchanges = 0;  // plain data: the semaphores publish it
  std::thread other([&] {
    for (long i = 0; i < rounds; ++i) {
      ping.acquire();
      ++exchanges;
      pong.release();
    }
  });
  for (long i = 0; i < rounds; ++i) {
    ++exchanges;
    ping.release();
    pong.acquire();
  }
  other.join();
  EXPECT_EQ(exchanges, 2 * rounds);
  EXPECT_EQ(ping.value() + pong.value(), 0u);
}

TEST(Semaphore, ProducersAndConsumersAccountForEveryUnit) {
  Semaphore sem(Scope::thread, 0, 0);
  constexpr int kProducers = 2;
  constexpr int kConsumers = 3;
  const long per_producer = test::scaled(9000);
  const long total = per_producer * kProducers;
  std::atomic<long> taken{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&] {
      for (long i = 0; i < total / kConsumers; ++i) {
        EXPECT_FALSE(sem.wait());
        taken.fetch_add(1);
      }
    });
  }
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (long i = 0; i < per_producer;) {
        const auto n = static_cast<std::uint32_t>(1 + (i + p) % 3);
        const auto chunk = std::min<long>(n, per_producer - i);
        EXPECT_FALSE(sem.post(static_cast<std::uint32_t>(chunk)));
        i += chunk;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(taken.load(), total);
  EXPECT_EQ(sem.value(), 0u);
  EXPECT_EQ(sem.waiters(), 0u);
}

TEST(Semaphore, ReleaseOfManyWakesAsManyWaiters) {
  Semaphore sem(Scope::thread, 0, 0);
  constexpr int kWaiters = 4;
  std::vector<std::thread> waiters;
  for (int w = 0; w < kWaiters; ++w) waiters.emplace_back([&] { sem.acquire(); });
  while (sem.waiters() != kWaiters) std::this_thread::yield();
  sem.release(kWaiters);
  for (auto& t : waiters) t.join();
  EXPECT_EQ(sem.value(), 0u);
}

}  // namespace
}  // namespace xproc::sync
