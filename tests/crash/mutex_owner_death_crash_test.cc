// Crash injection for the robust Mutex: a victim process loops lock / update two fields /
// unlock on a shared robust mutex while survivor threads contend for it; the victim is
// SIGKILLed at a random instant (inside lock, inside the critical section, inside unlock, or
// outside). Survivors must always make progress, must see owner_died exactly when the victim
// died holding the lock, and the two protected fields must stay equal (repaired on owner_died).
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/detail/spin.h"
#include "xproc/sync/mutex.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

struct Protected {
  explicit Protected(MutexOptions options) : mutex(Scope::process, options) {}
  Mutex mutex;
  // Under the mutex: `first` and `second` are always equal outside a critical section.
  long first = 0;
  long second = 0;
  std::atomic<int> victim_holding{0};  // 1 from just after acquire to just before release
  std::atomic<long> victim_rounds{0};
  std::atomic<long> owner_died_seen{0};
  std::atomic<long> violations{0};
};

// One locked update; returns false on an error other than owner_died.
bool update(Protected& shared, bool victim) {
  std::error_code ec = shared.mutex.acquire();
  if (ec == errc::owner_died) {
    shared.owner_died_seen.fetch_add(1);
    shared.second = shared.first;  // repair: the dead owner may have updated only `first`
    if (shared.mutex.make_consistent()) return false;
  } else if (ec) {
    return false;
  }
  if (victim) shared.victim_holding.store(1);
  if (shared.first != shared.second) shared.violations.fetch_add(1);
  ++shared.first;
  for (int i = 0; i < 16; ++i) detail::cpu_relax();  // widen the window between the fields
  ++shared.second;
  if (victim) shared.victim_holding.store(0);
  return !shared.mutex.release();
}

TEST(MutexOwnerDeathCrash, SurvivorsProgressAndSeeOwnerDiedWheneverTheVictimDiedHolding) {
  const long iterations = test::scaled(200);
  std::mt19937 random(20261123);
  long died_holding = 0;
  long slow_iterations = 0;
  for (long iteration = 0; iteration < iterations; ++iteration) {
    const auto iteration_start = Clock::now();
    MutexOptions options;
    options.kind = static_cast<MutexKind>(iteration % 3);
    options.spin_rounds = iteration % 2 == 0 ? 0 : kMutexDefaultSpinRounds;
    test::SharedObject<Protected> shared(options);
    std::atomic<bool> stop{false};
    std::atomic<bool> survivor_failed{false};
    std::vector<std::thread> survivors;
    for (int t = 0; t < 2; ++t) {
      survivors.emplace_back([&] {
        while (!stop.load(std::memory_order_relaxed)) {
          if (!update(*shared, false)) {
            survivor_failed.store(true);
            return;
          }
          std::this_thread::yield();
        }
      });
    }
    auto victim = test::Child::start([&] {
      for (;;) {
        if (!update(*shared, true)) return 1;
        shared->victim_rounds.fetch_add(1);
      }
    });
    // Kill at a random instant: after a random number of the victim's rounds, plus a random
    // short busy delay.
    const long rounds = static_cast<long>(random() % 8);
    const auto give_up = Clock::now() + 10s;
    while (shared->victim_rounds.load() < rounds && Clock::now() < give_up) {
      std::this_thread::yield();
    }
    const auto pauses = random() % 2000;
    for (unsigned i = 0; i < pauses; ++i) detail::cpu_relax();
    const long died_before = shared->owner_died_seen.load();
    victim.kill(SIGKILL);
    const auto status = victim.wait(10s);
    ASSERT_TRUE(status.signaled) << "victim exited with " << status.exit_code;
    const bool held = shared->victim_holding.load() == 1;
    died_holding += held;

    // The main thread must get the lock promptly, whatever the victim held.
    std::error_code ec = shared->mutex.acquire_until(Clock::now() + 5s);
    ASSERT_TRUE(!ec || ec == errc::owner_died) << ec.message();
    if (ec == errc::owner_died) {
      shared->owner_died_seen.fetch_add(1);
      shared->second = shared->first;
      ASSERT_FALSE(shared->mutex.make_consistent());
    }
    EXPECT_EQ(shared->first, shared->second);
    const long died_after = shared->owner_died_seen.load();
    ASSERT_FALSE(shared->mutex.release());
    if (held) {
      EXPECT_EQ(died_after - died_before, 1) << "iteration " << iteration;
    } else {
      EXPECT_LE(died_after - died_before, 1) << "iteration " << iteration;
    }

    // Survivors go on after the death.
    const long progress = shared->first;
    while (shared->mutex.acquire_until(Clock::now() + 5s) == std::error_code{} &&
           shared->first < progress + 4) {
      ASSERT_FALSE(shared->mutex.release());
      if (survivor_failed.load()) break;
      std::this_thread::yield();
    }
    ASSERT_FALSE(shared->mutex.release());
    stop.store(true);
    for (auto& survivor : survivors) survivor.join();
    EXPECT_FALSE(survivor_failed.load()) << "iteration " << iteration;
    EXPECT_EQ(shared->violations.load(), 0) << "iteration " << iteration;
    EXPECT_EQ(shared->owner_died_seen.load(), died_after);
    EXPECT_FALSE(shared->mutex.acquire());
    EXPECT_EQ(shared->first, shared->second);
    EXPECT_FALSE(shared->mutex.release());
    slow_iterations += Clock::now() - iteration_start > 50ms;
  }
  std::printf("victim killed holding the lock in %ld of %ld iterations; %ld took over 50 ms\n",
              died_holding, iterations, slow_iterations);
  EXPECT_GT(died_holding, 0);
}

}  // namespace
}  // namespace xproc::sync
