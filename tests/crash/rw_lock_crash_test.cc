// What survivors of a SIGKILLed RwLock participant see (rw_lock.h, "Death of a participant").
// This version does not recover dead holders; these tests pin down the documented behaviour:
// nobody hangs in a timed operation, the lock state is exactly what the dead left, and the
// paths the dead do not block keep working.

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include "child_process.h"
#include "eventually.h"
#include "rw_policy_names.h"
#include "shared_object.h"
#include "xproc/sync/rw_lock.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

using test::eventually;

struct Shared {
  explicit Shared(RwPolicy policy) : lock(Scope::process, policy) {}
  RwLock lock;
  std::atomic<std::uint32_t> child_ready{0};
};

class RwLockCrashTest : public ::testing::TestWithParam<RwPolicy> {};

INSTANTIATE_TEST_SUITE_P(AllPolicies, RwLockCrashTest, test::kAllRwPolicies, test::rw_policy_name);

// The child signals, then waits to be killed.
int hold_until_killed(Shared& shared) {
  shared.child_ready.store(1);
  for (;;) pause();
}

void kill_and_reap(test::Child& child) {
  child.kill(SIGKILL);
  const test::ChildStatus status = child.wait(10s);
  EXPECT_TRUE(status.signaled && status.term_signal == SIGKILL);
}

TEST_P(RwLockCrashTest, DeadReaderLeavesItsHoldAndWritersTimeOut) {
  test::SharedObject<Shared> shared(GetParam());
  test::Child child = test::Child::start([&] {
    shared->lock.lock_shared();
    return hold_until_killed(*shared);
  });
  ASSERT_TRUE(eventually([&] { return shared->child_ready.load() == 1; }));
  kill_and_reap(child);
  EXPECT_EQ(shared->lock.snapshot().readers, 1u);
  EXPECT_EQ(shared->lock.acquire_until(Clock::now() + 20ms), errc::timed_out);
  EXPECT_EQ(shared->lock.try_acquire(), errc::would_block);
  // The timed-out writer withdrew completely: every policy admits readers again, beside the
  // dead reader's leaked hold.
  EXPECT_TRUE(shared->lock.try_lock_shared());
  shared->lock.unlock_shared();
  EXPECT_TRUE(shared->lock.try_lock_shared_for(20ms));
  shared->lock.unlock_shared();
  const RwLockSnapshot view = shared->lock.snapshot();
  EXPECT_EQ(view.readers, 1u);
  EXPECT_FALSE(view.writer_staged);
  EXPECT_EQ(view.queued_readers + view.queued_writers, 0u);
}

TEST_P(RwLockCrashTest, DeadWriterLeavesTheLockHeldAndEveryoneTimesOut) {
  test::SharedObject<Shared> shared(GetParam());
  test::Child child = test::Child::start([&] {
    shared->lock.lock();
    return hold_until_killed(*shared);
  });
  ASSERT_TRUE(eventually([&] { return shared->child_ready.load() == 1; }));
  kill_and_reap(child);
  EXPECT_TRUE(shared->lock.snapshot().writer_holds);
  EXPECT_EQ(shared->lock.acquire_shared_until(Clock::now() + 20ms), errc::timed_out);
  EXPECT_EQ(shared->lock.acquire_until(Clock::now() + 20ms), errc::timed_out);
  EXPECT_EQ(shared->lock.try_acquire_shared(), errc::would_block);
}

TEST_P(RwLockCrashTest, WriterKilledWhileParkedLeavesTheStageTaken) {
  test::SharedObject<Shared> shared(GetParam());
  shared->lock.lock_shared();
  test::Child child = test::Child::start([&] {
    shared->lock.lock();
    return 1;  // never gets here: killed while parked
  });
  ASSERT_TRUE(eventually([&] { return shared->lock.snapshot().parked_drainers == 1; }));
  kill_and_reap(child);
  // The survivor's recursive read still passes the dead staged writer.
  ASSERT_TRUE(shared->lock.try_lock_shared_for(20ms));
  shared->lock.unlock_shared();
  shared->lock.unlock_shared();
  const RwLockSnapshot view = shared->lock.snapshot();
  EXPECT_TRUE(view.writer_staged);
  EXPECT_FALSE(view.writer_holds);
  EXPECT_EQ(view.readers, 0u);
  EXPECT_EQ(shared->lock.acquire_until(Clock::now() + 20ms), errc::timed_out);
  // Only prefer_reader lets new readers past a staged writer.
  const bool readers_pass = GetParam() == RwPolicy::prefer_reader;
  EXPECT_EQ(shared->lock.try_lock_shared_for(20ms), readers_pass);
  if (readers_pass) shared->lock.unlock_shared();
}

TEST(RwLockCrash, QueuedPhaseFairReaderKilledBecomesADeadHolderAtThePhaseEnd) {
  test::SharedObject<Shared> shared(RwPolicy::phase_fair);
  shared->lock.lock();
  test::Child child = test::Child::start([&] {
    shared->lock.lock_shared();
    return 1;  // never gets here: killed while queued
  });
  ASSERT_TRUE(eventually([&] {
    const RwLockSnapshot view = shared->lock.snapshot();
    return view.queued_readers == 1 && view.parked_readers == 1;
  }));
  kill_and_reap(child);
  shared->lock.unlock();
  const RwLockSnapshot view = shared->lock.snapshot();
  EXPECT_EQ(view.readers, 1u);  // promoted at the end of the writer phase
  EXPECT_FALSE(view.writer_staged);
  ASSERT_TRUE(shared->lock.try_lock_shared());  // readers keep working
  shared->lock.unlock_shared();
  EXPECT_EQ(shared->lock.acquire_until(Clock::now() + 20ms), errc::timed_out);
}

}  // namespace
}  // namespace xproc::sync
