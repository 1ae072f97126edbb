// Thread-level tests of xproc::sync::Barrier: nobody passes early, one serial participant per
// generation, immediate reuse, timed arrivals withdraw, errors.
#include "xproc/sync/barrier.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "child_process.h"
#include "eventually.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

TEST(Barrier, CountZeroOrAboveMaxThrowsInvalidArgument) {
  EXPECT_THROW(Barrier(Scope::thread, 0), std::system_error);
  EXPECT_THROW(Barrier(Scope::thread, Barrier::kMaxCount + 1), std::system_error);
}

TEST(Barrier, ZeroFilledBarrierReportsInvalidArgument) {
  alignas(Barrier) unsigned char bytes[sizeof(Barrier)] = {};
  auto* barrier = reinterpret_cast<Barrier*>(bytes);
  EXPECT_EQ(barrier->scope(), Scope::thread);
  EXPECT_EQ(barrier->arrive_and_wait().error(), errc::invalid_argument);
}

TEST(Barrier, SingleParticipantPassesAtOnceAsSerialEveryTime) {
  Barrier barrier(Scope::thread, 1);
  for (int i = 0; i < 3; ++i) {
    const Result<Arrival> arrival = barrier.arrive_and_wait();
    ASSERT_TRUE(arrival);
    EXPECT_EQ(arrival.value(), Arrival::serial);
  }
  EXPECT_EQ(barrier.arrive_and_wait_until(Clock::now() - 1s).value(), Arrival::serial);
}

TEST(Barrier, ThreadsNeverPassEarlyAndOneIsSerialPerGeneration) {
  constexpr std::uint32_t kThreads = 4;
  Barrier barrier(Scope::thread, kThreads, 0);
  const long rounds = test::scaled(2000);
  std::atomic<long> arrivals{0};
  std::atomic<long> serials{0};
  std::atomic<long> failures{0};
  std::vector<std::thread> threads;
  for (std::uint32_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (long r = 0; r < rounds; ++r) {
        arrivals.fetch_add(1);
        const Result<Arrival> arrival = barrier.arrive_and_wait();
        if (!arrival) {
          failures.fetch_add(1);
          return;
        }
        if (arrival.value() == Arrival::serial) serials.fetch_add(1);
        const long seen = arrivals.load();
        // Everyone arrived for round r; nobody can have arrived beyond round r+1 without us.
        if (seen < (r + 1) * kThreads || seen > (r + 2) * kThreads - 1) failures.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(serials.load(), rounds);
  EXPECT_EQ(barrier.arrived(), 0u);
}

TEST(Barrier, PublishesWritesOfEveryParticipant) {
  constexpr std::uint32_t kThreads = 3;
  Barrier barrier(Scope::thread, kThreads, 0);
  const long rounds = test::scaled(500);
  long slots[kThreads] = {};  // plain data: the barrier orders it
  std::atomic<long> failures{0};
  std::vector<std::thread> threads;
  for (std::uint32_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (long r = 1; r <= rounds; ++r) {
        slots[t] = r;
        if (!barrier.arrive_and_wait()) failures.fetch_add(1);
        for (std::uint32_t other = 0; other < kThreads; ++other) {
          if (slots[other] != r) failures.fetch_add(1);
        }
        if (!barrier.arrive_and_wait()) failures.fetch_add(1);  // nobody writes r+1 yet
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(Barrier, TimedArrivalAtAPastDeadlineTimesOutAndWithdraws) {
  Barrier barrier(Scope::thread, 2);
  EXPECT_EQ(barrier.arrive_and_wait_until(Clock::now() - 1s).error(), errc::timed_out);
  EXPECT_EQ(barrier.arrived(), 0u);
  EXPECT_EQ(barrier.waiters(), 0u);
}

TEST(Barrier, TimedArrivalTimesOutNoEarlierThanANearDeadlineAndBarrierStaysUsable) {
  Barrier barrier(Scope::thread, 2);
  const auto start = Clock::now();
  EXPECT_EQ(barrier.arrive_and_wait_for(30ms).error(), errc::timed_out);
  EXPECT_GE(Clock::now() - start, 30ms);
  EXPECT_EQ(barrier.arrived(), 0u);
  std::atomic<int> serials{0};
  std::thread other([&] {
    if (barrier.arrive_and_wait_for(3600s).value() == Arrival::serial) serials.fetch_add(1);
  });
  if (barrier.arrive_and_wait_for(3600s).value() == Arrival::serial) serials.fetch_add(1);
  other.join();
  EXPECT_EQ(serials.load(), 1);
}

TEST(Barrier, TimedArrivalsOfAllParticipantsComplete) {
  constexpr std::uint32_t kThreads = 3;
  Barrier barrier(Scope::thread, kThreads, 0);
  const long rounds = test::scaled(300);
  std::atomic<long> serials{0};
  std::atomic<long> failures{0};
  std::vector<std::thread> threads;
  for (std::uint32_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (long r = 0; r < rounds; ++r) {
        const Result<Arrival> arrival = barrier.arrive_and_wait_for(20s);
        if (!arrival) {
          failures.fetch_add(1);
          return;
        }
        if (arrival.value() == Arrival::serial) serials.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(serials.load(), rounds);
}

}  // namespace
}  // namespace xproc::sync

namespace xproc::sync {
namespace {

// POSIX lets the serial thread destroy (or re-initialize) a barrier as soon as its generation
// completed, while the others may still be on their way out. ~Barrier() waits for them: under
// ASan a participant touching the freed barrier is a heap-use-after-free report.
TEST(Barrier, SerialParticipantMayDeleteTheBarrierAtOnce) {
  constexpr int kThreads = 4;
  const long rounds = test::scaled(300);
  for (long round = 0; round < rounds; ++round) {
    auto* barrier = new Barrier(Scope::thread, kThreads);
    std::atomic<int> serials{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, barrier] {
        Result<Arrival> arrival = barrier->arrive_and_wait();
        ASSERT_TRUE(arrival.has_value());
        if (*arrival == Arrival::serial) {
          serials.fetch_add(1);
          delete barrier;
        }
      });
    }
    for (auto& thread : threads) thread.join();
    ASSERT_EQ(serials.load(), 1);
  }
}

TEST(Barrier, InsideCountsParticipantsUntilTheyLeave) {
  Barrier barrier(Scope::thread, 2);
  EXPECT_EQ(barrier.inside(), 0u);
  std::thread other([&] { ASSERT_TRUE(barrier.arrive_and_wait().has_value()); });
  ASSERT_TRUE(test::eventually([&] { return barrier.inside() == 1; }));
  ASSERT_TRUE(barrier.arrive_and_wait().has_value());
  other.join();
  EXPECT_EQ(barrier.inside(), 0u);
}

}  // namespace
}  // namespace xproc::sync
