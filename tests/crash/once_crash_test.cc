// Crash tests of xproc::sync::Once: a runner SIGKILLed inside f leaves the Once running; the
// survivors' call_until returns timed_out at their deadline instead of blocking for good.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/once.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

struct Shared {
  Once once{Scope::process, 0};
  std::atomic<bool> inside{false};
};

TEST(OnceCrash, RunnerKilledInsideFDoesNotBlockCallUntilForever) {
  test::SharedObject<Shared> shared;
  test::Child runner = test::Child::start([&]() -> int {
    (void)shared->once.call([&] {
      shared->inside.store(true);
      for (;;) pause();
    });
    return 1;
  });
  const auto deadline = Clock::now() + 20s;
  while (!shared->inside.load() && Clock::now() < deadline) std::this_thread::yield();
  ASSERT_TRUE(shared->inside.load());
  const std::uint64_t token = shared->once.runner_token();
  EXPECT_NE(token, 0u);
  // A survivor already waiting when the runner dies.
  test::Child waiter = test::Child::start(
      [&] { return shared->once.call_for([] {}, 300ms) == errc::timed_out ? 0 : 1; });
  runner.kill(SIGKILL);
  EXPECT_TRUE(runner.wait(10s).signaled);
  EXPECT_TRUE(waiter.wait(20s).ok());
  int runs = 0;
  EXPECT_EQ(shared->once.call_for([&] { ++runs; }, 50ms), errc::timed_out);
  EXPECT_EQ(runs, 0);
  EXPECT_FALSE(shared->once.is_done());
  EXPECT_EQ(shared->once.runner_token(), token);  // who was running: for the application
}

}  // namespace
}  // namespace xproc::sync
