// Thread-level tests of xproc::sync::Once: exactly one run, effects visible to every caller,
// retry after a throw, recursion reported, timed waits.
#include "xproc/sync/once.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "child_process.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

TEST(Once, ZeroFilledRunsOnceInThreadScope) {
  alignas(Once) unsigned char bytes[sizeof(Once)] = {};
  auto* once = reinterpret_cast<Once*>(bytes);
  EXPECT_EQ(once->scope(), Scope::thread);
  EXPECT_FALSE(once->is_done());
  int runs = 0;
  EXPECT_FALSE(once->call([&] { ++runs; }));
  EXPECT_FALSE(once->call([&] { ++runs; }));
  EXPECT_EQ(runs, 1);
  EXPECT_TRUE(once->is_done());
  EXPECT_EQ(once->runner_token(), 0u);
}

TEST(Once, ConcurrentCallersRunFExactlyOnceAndAllSeeItsEffects) {
  const int rounds = static_cast<int>(test::scaled(200));
  for (int round = 0; round < rounds; ++round) {
    Once once(Scope::thread, 0);
    std::atomic<int> runs{0};
    long value = 0;  // plain data written by f, read by every caller after call()
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        const std::error_code error = once.call([&] {
          runs.fetch_add(1);
          std::this_thread::yield();
          value = 42;
        });
        if (error || value != 42) wrong.fetch_add(1);
      });
    }
    for (auto& t : threads) t.join();
    ASSERT_EQ(runs.load(), 1);
    ASSERT_EQ(wrong.load(), 0);
  }
}

TEST(Once, ThrowingFLeavesItNotRunAndTheNextCallerRunsIt) {
  Once once;
  int runs = 0;
  EXPECT_THROW((void)once.call([&] {
    ++runs;
    throw std::runtime_error("first attempt fails");
  }),
               std::runtime_error);
  EXPECT_FALSE(once.is_done());
  EXPECT_FALSE(once.call([&] { ++runs; }));
  EXPECT_EQ(runs, 2);
  EXPECT_TRUE(once.is_done());
}

TEST(Once, WaiterRetriesAfterTheRunnerThrows) {
  Once once(Scope::thread, 0);
  std::atomic<bool> runner_inside{false};
  std::atomic<bool> release_runner{false};
  std::atomic<int> attempts{0};
  std::thread runner([&] {
    EXPECT_THROW((void)once.call([&] {
      attempts.fetch_add(1);
      runner_inside.store(true);
      while (!release_runner.load()) std::this_thread::yield();
      throw std::runtime_error("fails");
    }),
                 std::runtime_error);
  });
  while (!runner_inside.load()) std::this_thread::yield();
  std::vector<std::thread> waiters;
  std::atomic<int> ok{0};
  for (int w = 0; w < 3; ++w) {
    waiters.emplace_back([&] {
      if (!once.call([&] { attempts.fetch_add(1); })) ok.fetch_add(1);
    });
  }
  release_runner.store(true);
  runner.join();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(attempts.load(), 2);  // the failed run and exactly one retry
  EXPECT_EQ(ok.load(), 3);
  EXPECT_TRUE(once.is_done());
}

TEST(Once, RecursiveCallFromFReturnsDeadlock) {
  Once once;
  std::error_code inner;
  EXPECT_FALSE(once.call([&] { inner = once.call([] {}); }));
  EXPECT_EQ(inner, errc::deadlock);
  EXPECT_TRUE(once.is_done());
}

TEST(Once, CallUntilTimesOutWhileAnotherRunsAtPastNearAndFarDeadlines) {
  Once once(Scope::thread, 0);
  std::atomic<bool> inside{false};
  std::atomic<bool> release{false};
  std::thread runner([&] {
    EXPECT_FALSE(once.call([&] {
      inside.store(true);
      while (!release.load()) std::this_thread::yield();
    }));
  });
  while (!inside.load()) std::this_thread::yield();
  int runs = 0;
  std::thread waiter([&] {
    EXPECT_EQ(once.call_until([&] { ++runs; }, Clock::now() - 1s), errc::timed_out);
    const auto start = Clock::now();
    EXPECT_EQ(once.call_for([&] { ++runs; }, 30ms), errc::timed_out);
    EXPECT_GE(Clock::now() - start, 30ms);
  });
  waiter.join();
  std::thread far([&] { EXPECT_FALSE(once.call_until([&] { ++runs; }, Clock::now() + 3600s)); });
  release.store(true);
  runner.join();
  far.join();
  EXPECT_EQ(runs, 0);
  EXPECT_TRUE(once.is_done());
}

TEST(Once, CorruptStateIsReported) {
  Once once;
  const std::uint32_t garbage = 7;
  std::memcpy(static_cast<void*>(&once), &garbage, sizeof garbage);  // state_ is at offset 0
  EXPECT_EQ(once.call([] {}), errc::corrupt_state);
}

}  // namespace
}  // namespace xproc::sync
