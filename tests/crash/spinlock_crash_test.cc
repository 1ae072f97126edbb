// Crash tests of xproc::sync::Spinlock: a holder SIGKILLed inside the critical section leaves the
// lock held (documented: no owner, no futex); try_lock_until bounds the survivors' wait.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/spinlock.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

struct Shared {
  Spinlock lock{Scope::process};
  std::atomic<bool> holding{false};
};

TEST(SpinlockCrash, HolderKilledLeavesItHeldAndTimedAttemptsAreBounded) {
  test::SharedObject<Shared> shared;
  test::Child holder = test::Child::start([&]() -> int {
    shared->lock.lock();
    shared->holding.store(true);
    for (;;) pause();
  });
  const auto deadline = Clock::now() + 20s;
  while (!shared->holding.load() && Clock::now() < deadline) std::this_thread::yield();
  ASSERT_TRUE(shared->holding.load());
  holder.kill(SIGKILL);
  EXPECT_TRUE(holder.wait(10s).signaled);
  EXPECT_TRUE(shared->lock.is_locked());
  EXPECT_FALSE(shared->lock.try_lock_for(50ms));
}

}  // namespace
}  // namespace xproc::sync
