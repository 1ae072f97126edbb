// Process-level tests of xproc::sync::EventCount on MAP_SHARED memory: cross-process ping-pong
// (no lost wake-up), notify_all across processes.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/event_count.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

struct Shared {
  EventCount ec{Scope::process, 0};
  std::atomic<std::uint32_t> turn{0};
  std::atomic<std::uint32_t> done{0};
};

// Waits for `ready()`; false if 20 s pass (a lost wake-up would show as a failure, not a hang).
template <class Ready>
bool await(EventCount& ec, Ready ready) {
  return !ec.await_until(ready, Clock::now() + 20s);
}

TEST(EventCountProcess, PingPongBetweenProcessesLosesNoWakeUp) {
  test::SharedObject<Shared> shared;
  const auto rounds = static_cast<std::uint32_t>(test::scaled(20000));
  auto player = [&](std::uint32_t parity) {
    for (std::uint32_t i = 0; i < rounds; ++i) {
      if (!await(shared->ec, [&] { return shared->turn.load() % 2 == parity; })) return 1;
      shared->turn.fetch_add(1);
      shared->ec.notify_one();
    }
    return 0;
  };
  test::Child child = test::Child::start([&] { return player(1); });
  EXPECT_EQ(player(0), 0);
  const test::ChildStatus status = child.wait(60s);
  EXPECT_TRUE(status.ok()) << status.exit_code;
  EXPECT_EQ(shared->turn.load(), 2 * rounds);
}

TEST(EventCountProcess, NotifyAllReachesWaitersInEveryProcess) {
  test::SharedObject<Shared> shared;
  constexpr std::uint32_t kChildren = 3;
  const auto rounds = static_cast<std::uint32_t>(test::scaled(100));
  std::vector<test::Child> children;
  for (std::uint32_t c = 0; c < kChildren; ++c) {
    children.push_back(test::Child::start([&] {
      for (std::uint32_t r = 1; r <= rounds; ++r) {
        if (!await(shared->ec, [&] { return shared->turn.load() >= r; })) return 1;
        shared->done.fetch_add(1);
        shared->ec.notify_all();
      }
      return 0;
    }));
  }
  for (std::uint32_t r = 1; r <= rounds; ++r) {
    shared->turn.store(r);
    shared->ec.notify_all();
    ASSERT_TRUE(await(shared->ec, [&] { return shared->done.load() == r * kChildren; }));
  }
  for (auto& child : children) EXPECT_TRUE(child.wait(30s).ok());
  EXPECT_EQ(shared->done.load(), rounds * kChildren);
}

}  // namespace
}  // namespace xproc::sync
