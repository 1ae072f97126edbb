// Crash tests of xproc::sync::EventCount: a waiter SIGKILLed while parked (or between
// prepare_wait and wait) leaves a stale waiter count that costs notifiers a syscall and nothing
// else: later waits and notifies between survivors work.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/event_count.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

struct Shared {
  EventCount ec{Scope::process, 0};
  std::atomic<std::uint32_t> turn{0};
  std::atomic<bool> announced{false};
};

// Waits for `ready()`; false if 20 s pass (a lost wake-up would show as a failure, not a hang).
template <class Ready>
bool await(EventCount& ec, Ready ready) {
  return !ec.await_until(ready, Clock::now() + 20s);
}

bool wait_for_waiters(const EventCount& ec, std::uint32_t count) {
  const auto deadline = Clock::now() + 20s;
  while (ec.waiters() < count) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);  // polling for a state, not ordering events
  }
  return true;
}

TEST(EventCountCrash, WaitersKilledParkedOrAnnouncedDoNotDisturbSurvivors) {
  test::SharedObject<Shared> shared;
  // One victim parked in wait(), one killed between prepare_wait() and wait().
  test::Child parked = test::Child::start([&] {
    const EventCount::Key key = shared->ec.prepare_wait();
    (void)shared->ec.wait(key);
    return 0;
  });
  test::Child announced = test::Child::start([&]() -> int {
    (void)shared->ec.prepare_wait();
    shared->announced.store(true);
    for (;;) std::this_thread::sleep_for(1s);
  });
  ASSERT_TRUE(wait_for_waiters(shared->ec, 2));
  while (!shared->announced.load()) std::this_thread::yield();
  parked.kill(SIGKILL);
  announced.kill(SIGKILL);
  EXPECT_TRUE(parked.wait(10s).signaled);
  EXPECT_TRUE(announced.wait(10s).signaled);
  EXPECT_EQ(shared->ec.waiters(), 2u);  // stale: the cost the header describes

  const auto rounds = static_cast<std::uint32_t>(test::scaled(2000));
  auto player = [&](std::uint32_t parity) {
    for (std::uint32_t i = 0; i < rounds; ++i) {
      if (!await(shared->ec, [&] { return shared->turn.load() % 2 == parity; })) return 1;
      shared->turn.fetch_add(1);
      shared->ec.notify_one();
    }
    return 0;
  };
  test::Child survivor = test::Child::start([&] { return player(1); });
  EXPECT_EQ(player(0), 0);
  EXPECT_TRUE(survivor.wait(30s).ok());
  EXPECT_EQ(shared->turn.load(), 2 * rounds);
}

}  // namespace
}  // namespace xproc::sync
