// Process-level tests of xproc::sync::Semaphore on MAP_SHARED memory: exact accounting across
// processes, cross-process ping-pong.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/semaphore.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

struct Shared {
  Semaphore items{Scope::process, 0, 0};
  Semaphore ping{Scope::process, 0, 0};
  Semaphore pong{Scope::process, 0, 0};
  std::atomic<long> taken{0};
};

TEST(SemaphoreProcess, UnitsPostedInOneProcessAreTakenExactlyOnceByOthers) {
  test::SharedObject<Shared> shared;
  constexpr int kChildren = 3;
  const long per_child = test::scaled(3000);
  std::vector<test::Child> children;
  for (int c = 0; c < kChildren; ++c) {
    children.push_back(test::Child::start([&] {
      for (long i = 0; i < per_child; ++i) {
        if (shared->items.wait_for(20s)) return 1;
        shared->taken.fetch_add(1);
      }
      return 0;
    }));
  }
  const long total = per_child * kChildren;
  for (long posted = 0; posted < total;) {
    const long chunk = std::min<long>(1 + posted % 4, total - posted);
    ASSERT_FALSE(shared->items.post(static_cast<std::uint32_t>(chunk)));
    posted += chunk;
  }
  for (auto& child : children) {
    const test::ChildStatus status = child.wait(60s);
    EXPECT_TRUE(status.ok()) << status.exit_code;
  }
  EXPECT_EQ(shared->taken.load(), total);
  EXPECT_EQ(shared->items.value(), 0u);
  EXPECT_EQ(shared->items.try_wait(), errc::would_block);
}

TEST(SemaphoreProcess, PingPongBetweenProcessesLosesNoWakeUp) {
  test::SharedObject<Shared> shared;
  const long rounds = test::scaled(10000);
  test::Child child = test::Child::start([&] {
    for (long i = 0; i < rounds; ++i) {
      if (shared->ping.wait_for(20s)) return 1;
      shared->taken.fetch_add(1, std::memory_order_relaxed);
      if (shared->pong.post()) return 2;
    }
    return 0;
  });
  for (long i = 0; i < rounds; ++i) {
    ASSERT_FALSE(shared->ping.post());
    ASSERT_FALSE(shared->pong.wait_for(20s));
    ASSERT_EQ(shared->taken.load(std::memory_order_relaxed), i + 1);
  }
  const test::ChildStatus status = child.wait(30s);
  EXPECT_TRUE(status.ok()) << status.exit_code;
  EXPECT_EQ(shared->ping.value() + shared->pong.value(), 0u);
}

}  // namespace
}  // namespace xproc::sync
