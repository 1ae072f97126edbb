// Process-level tests of xproc::sync::CondVar on MAP_SHARED memory: ping-pong between two
// processes, broadcast with requeue across processes, timed waits.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/cond_var.h"
#include "xproc/sync/mutex.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

struct Shared {
  Mutex mutex{Scope::process};
  CondVar cv{Scope::process};
  long turn = 0;       // protected by mutex
  int arrived = 0;     // protected by mutex
  int generation = 0;  // protected by mutex
  int done = 0;        // protected by mutex
};

TEST(CondVarProcess, PingPongBetweenTwoProcessesAlternatesExactly) {
  test::SharedObject<Shared> shared;
  const long rounds = test::scaled(2000);
  auto player = [&](long parity) {
    std::unique_lock lock(shared->mutex);
    for (long i = 0; i < rounds; ++i) {
      if (!shared->cv.wait_for(lock, 10s, [&] { return shared->turn % 2 == parity; })) return 1;
      ++shared->turn;
      shared->cv.notify_one();
    }
    return 0;
  };
  test::Child child = test::Child::start([&] { return player(1); });
  EXPECT_EQ(player(0), 0);
  const test::ChildStatus status = child.wait(30s);
  EXPECT_TRUE(status.ok()) << status.exit_code;
  std::lock_guard hold(shared->mutex);
  EXPECT_EQ(shared->turn, 2 * rounds);
}

TEST(CondVarProcess, BroadcastWithRequeueReachesEveryWaitingProcess) {
  test::SharedObject<Shared> shared;
  constexpr int kChildren = 4;
  const int rounds = static_cast<int>(test::scaled(20));
  std::vector<test::Child> children;
  for (int c = 0; c < kChildren; ++c) {
    children.push_back(test::Child::start([&] {
      std::unique_lock lock(shared->mutex);
      for (int r = 1; r <= rounds; ++r) {
        ++shared->arrived;
        shared->cv.notify_all();  // wakes the parent waiting for arrivals (generic wake)
        if (!shared->cv.wait_for(lock, 10s, [&] { return shared->generation >= r; })) return 1;
      }
      ++shared->done;
      return 0;
    }));
  }
  {
    std::unique_lock lock(shared->mutex);
    for (int r = 1; r <= rounds; ++r) {
      ASSERT_TRUE(shared->cv.wait_for(lock, 10s, [&] { return shared->arrived == kChildren * r; }));
      ++shared->generation;
      shared->cv.notify_all(shared->mutex);
    }
  }
  for (auto& child : children) {
    const test::ChildStatus status = child.wait(30s);
    EXPECT_TRUE(status.ok()) << status.exit_code;
  }
  std::lock_guard hold(shared->mutex);
  EXPECT_EQ(shared->done, kChildren);
}

TEST(CondVarProcess, RequeuedWaitersOfAnotherProcessRunOneAtATimeAfterTheUnlock) {
  test::SharedObject<Shared> shared;
  constexpr int kChildren = 3;
  std::vector<test::Child> children;
  for (int c = 0; c < kChildren; ++c) {
    children.push_back(test::Child::start([&] {
      std::unique_lock lock(shared->mutex);
      ++shared->arrived;
      if (!shared->cv.wait_for(lock, 10s, [&] { return shared->generation == 1; })) return 1;
      ++shared->done;
      return 0;
    }));
  }
  // Wait until all three are counted as waiters (they released the mutex inside wait).
  const auto end = Clock::now() + 10s;
  while (shared->cv.waiter_count() != kChildren && Clock::now() < end) std::this_thread::yield();
  ASSERT_EQ(shared->cv.waiter_count(), static_cast<unsigned>(kChildren));
  {
    std::lock_guard hold(shared->mutex);
    shared->generation = 1;
    shared->cv.notify_all(shared->mutex);
    EXPECT_EQ(shared->cv.requeue_count(), 1u);
    EXPECT_EQ(shared->done, 0);  // nobody can pass while we hold the mutex
  }
  for (auto& child : children) {
    const test::ChildStatus status = child.wait(30s);
    EXPECT_TRUE(status.ok()) << status.exit_code;
  }
  std::lock_guard hold(shared->mutex);
  EXPECT_EQ(shared->done, kChildren);
}

TEST(CondVarProcess, TimedWaitInAnotherProcessTimesOutWithTheMutexHeld) {
  test::SharedObject<Shared> shared;
  test::Child child = test::Child::start([&] {
    std::error_code ec = shared->mutex.acquire();
    if (ec) return 2;
    ec = shared->cv.wait_for(shared->mutex, 5ms, [] { return false; });
    if (ec != errc::timed_out) return 3;
    if (!shared->mutex.is_locked_by_caller()) return 4;
    return shared->mutex.release() ? 5 : 0;
  });
  const test::ChildStatus status = child.wait(30s);
  EXPECT_TRUE(status.ok()) << status.exit_code;
}

}  // namespace
}  // namespace xproc::sync
