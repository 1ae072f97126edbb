// Crash tests of xproc::sync::Barrier: a participant SIGKILLed while waiting still counts for
// its generation; the next generation's survivors are bounded by their deadline, withdraw, and
// the barrier works again for a new set of participants.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/barrier.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

struct Shared {
  Barrier barrier{Scope::process, 3, 0};
};

TEST(BarrierCrash, WaiterKilledInsideWaitDoesNotBlockTheSurvivorsLaterOperations) {
  test::SharedObject<Shared> shared;
  test::Child victim =
      test::Child::start([&] { return shared->barrier.arrive_and_wait() ? 0 : 1; });
  const auto deadline = Clock::now() + 20s;
  while (shared->barrier.waiters() < 1 && Clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);  // polling for a state, not ordering events
  }
  ASSERT_EQ(shared->barrier.waiters(), 1u);
  victim.kill(SIGKILL);
  EXPECT_TRUE(victim.wait(10s).signaled);

  // Generation 1: the dead participant's arrival counts, the two survivors complete it.
  auto survivor = [&] {
    if (!shared->barrier.arrive_and_wait_for(20s)) return 1;
    // Generation 2 misses the dead one: bounded by the deadline, and withdrawn.
    if (shared->barrier.arrive_and_wait_for(100ms).error() != errc::timed_out) return 2;
    return 0;
  };
  test::Child other = test::Child::start(survivor);
  EXPECT_EQ(survivor(), 0);
  EXPECT_TRUE(other.wait(20s).ok());
  EXPECT_EQ(shared->barrier.arrived(), 0u);

  // A new set of three participants uses the same barrier.
  auto fresh = [&] { return shared->barrier.arrive_and_wait_for(20s) ? 0 : 1; };
  test::Child a = test::Child::start(fresh);
  test::Child b = test::Child::start(fresh);
  EXPECT_EQ(fresh(), 0);
  EXPECT_TRUE(a.wait(20s).ok());
  EXPECT_TRUE(b.wait(20s).ok());
}

}  // namespace
}  // namespace xproc::sync
