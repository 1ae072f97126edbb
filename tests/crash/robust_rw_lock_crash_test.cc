// RobustRwLock: a survivor releases what a SIGKILLed process held, exactly once, and nothing a
// live process holds.

#include "xproc/sync/robust_rw_lock.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../sync/robust_rw_lock_table_file.h"
#include "child_process.h"
#include "eventually.h"
#include "rw_policy_names.h"
#include "shared_object.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

using test::eventually;

struct Shared {
  explicit Shared(RwPolicy policy) : lock(Scope::process, policy) {}
  RobustRwLock lock;
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> child_id{0};  // the child's lock_owner_id(), once attached
};

// Every process of a test attaches to one participant table: the lock names them by participant
// id, and recover() asks the table who died.
class TableTest {
 protected:
  void attach_parent() {
    Result<Participant> attached = table_.attach();
    ASSERT_TRUE(attached.has_value()) << attached.error().message();
    me_ = std::move(*attached);
  }
  // In a fork child: attaches and publishes its owner id. False on failure.
  bool attach_child(Shared& shared) {
    if (lock_owner_id() != 0) return false;  // a fork child does not inherit the parent's id
    Result<Participant> attached = table_.attach();
    if (!attached || lock_owner_id() != attached->id().pack()) return false;
    child_ = std::move(*attached);
    shared.child_id.store(lock_owner_id());
    return true;
  }

  test_support::RwLockTableFile table_;
  Participant me_;
  Participant child_;  // in the child only
};

class RobustRwLockCrashTest : public ::testing::TestWithParam<RwPolicy>, public TableTest {
 protected:
  void SetUp() override { attach_parent(); }
};

INSTANTIATE_TEST_SUITE_P(AllPolicies, RobustRwLockCrashTest, test::kAllRwPolicies,
                         test::rw_policy_name);

[[noreturn]] void wait_to_be_killed() {
  for (;;) pause();
}

void kill_and_reap(test::Child& child) {
  child.kill(SIGKILL);
  const test::ChildStatus status = child.wait(10s);
  EXPECT_TRUE(status.signaled && status.term_signal == SIGKILL);
}

TEST_P(RobustRwLockCrashTest, DeadReadersHoldsAreReleased) {
  test::SharedObject<Shared> shared(GetParam());
  test::Child child = test::Child::start([&]() -> int {
    if (!attach_child(*shared)) return 2;
    std::thread other([&] {  // a second thread of the same process holds too
      shared->lock.lock_shared();
      shared->ready.fetch_add(1);
      wait_to_be_killed();
    });
    other.detach();
    shared->lock.lock_shared();
    shared->lock.lock_shared();  // recursion: still one hold of this thread
    shared->ready.fetch_add(1);
    wait_to_be_killed();
  });
  ASSERT_TRUE(eventually([&] { return shared->ready.load() == 2; }));
  shared->lock.lock_shared();  // a live reader of another process
  kill_and_reap(child);
  EXPECT_EQ(shared->lock.snapshot().readers, 3u);
  std::thread writer(
      [&] { EXPECT_EQ(shared->lock.acquire_until(Clock::now() + 5ms), errc::timed_out); });
  writer.join();

  Result<RwRecovery> recovery = shared->lock.recover();
  ASSERT_TRUE(recovery.has_value()) << recovery.error().message();
  EXPECT_EQ(recovery->read_holds_released, 2u);
  EXPECT_EQ(recovery->read_holds_unresolved, 0u);
  EXPECT_FALSE(recovery->write_lock_released);
  EXPECT_EQ(shared->lock.snapshot().readers, 1u);  // ours stays

  // A second recovery finds nothing more.
  recovery = shared->lock.recover();
  ASSERT_TRUE(recovery.has_value());
  EXPECT_EQ(recovery->read_holds_released, 0u);

  shared->lock.unlock_shared();
  ASSERT_TRUE(shared->lock.try_lock());
  shared->lock.unlock();
}

TEST_P(RobustRwLockCrashTest, DeadWriterIsReleasedAndReported) {
  test::SharedObject<Shared> shared(GetParam());
  test::Child child = test::Child::start([&]() -> int {
    if (!attach_child(*shared)) return 2;
    shared->lock.lock();
    shared->ready.store(1);
    wait_to_be_killed();
  });
  ASSERT_TRUE(eventually([&] { return shared->ready.load() == 1; }));
  kill_and_reap(child);
  EXPECT_FALSE(shared->lock.try_lock_shared());
  Result<RwRecovery> recovery = shared->lock.recover();
  ASSERT_TRUE(recovery.has_value()) << recovery.error().message();
  EXPECT_TRUE(recovery->write_lock_released);
  EXPECT_FALSE(recovery->stage_released);
  ASSERT_TRUE(shared->lock.try_lock_shared());
  shared->lock.unlock_shared();
  ASSERT_TRUE(shared->lock.try_lock());
  shared->lock.unlock();
}

TEST_P(RobustRwLockCrashTest, DeadStagedWriterLeavesTheStage) {
  test::SharedObject<Shared> shared(GetParam());
  shared->lock.lock_shared();
  test::Child child = test::Child::start([&]() -> int {
    if (!attach_child(*shared)) return 2;
    shared->lock.lock();
    return 1;  // killed while parked
  });
  ASSERT_TRUE(eventually([&] { return shared->lock.snapshot().parked_drainers == 1; }));
  kill_and_reap(child);
  Result<RwRecovery> recovery = shared->lock.recover();
  ASSERT_TRUE(recovery.has_value()) << recovery.error().message();
  EXPECT_TRUE(recovery->stage_released);
  EXPECT_FALSE(recovery->write_lock_released);
  shared->lock.unlock_shared();
  const RwLockSnapshot view = shared->lock.snapshot();
  EXPECT_FALSE(view.writer_staged);
  EXPECT_EQ(view.readers + view.queued_readers + view.queued_writers, 0u);
  ASSERT_TRUE(shared->lock.try_lock());
  shared->lock.unlock();
}

TEST_P(RobustRwLockCrashTest, LiveOwnersAreNeverTouched) {
  test::SharedObject<Shared> shared(GetParam());
  shared->lock.lock_shared();
  Result<RwRecovery> recovery = shared->lock.recover([](std::uint32_t) { return false; });
  ASSERT_TRUE(recovery.has_value());
  EXPECT_EQ(recovery->read_holds_released, 0u);
  EXPECT_EQ(shared->lock.snapshot().readers, 1u);
  shared->lock.unlock_shared();
}

// Two survivors recover at once: the dead process's hold is dropped exactly once.
TEST_P(RobustRwLockCrashTest, ConcurrentRecoveriesReleaseEachHoldOnce) {
  test::SharedObject<Shared> shared(GetParam());
  test::Child child = test::Child::start([&]() -> int {
    if (!attach_child(*shared)) return 2;
    shared->lock.lock_shared();
    shared->ready.store(1);
    wait_to_be_killed();
  });
  ASSERT_TRUE(eventually([&] { return shared->ready.load() == 1; }));
  shared->lock.lock_shared();
  kill_and_reap(child);
  std::atomic<std::uint32_t> released{0};
  std::atomic<int> failures{0};
  auto survivor = [&] {
    Result<RwRecovery> recovery = shared->lock.recover();
    if (!recovery) {
      failures++;
      return;
    }
    released += recovery->read_holds_released;
  };
  std::thread first(survivor);
  std::thread second(survivor);
  first.join();
  second.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(released.load(), 1u);
  EXPECT_EQ(shared->lock.snapshot().readers, 1u);
  shared->lock.unlock_shared();
}

// A reader killed while queued behind a phase-fair writer had an acquire in flight: recovery
// cannot tell whether the lock counted it, so it leaves it and says so.
class RobustRwLockCrash : public ::testing::Test, public TableTest {};

TEST_F(RobustRwLockCrash, ReaderKilledMidAcquireIsReportedUnresolved) {
  attach_parent();
  test::SharedObject<Shared> shared(RwPolicy::phase_fair);
  shared->lock.lock();
  test::Child child = test::Child::start([&]() -> int {
    if (!attach_child(*shared)) return 2;
    shared->lock.lock_shared();
    return 1;  // killed while queued
  });
  ASSERT_TRUE(eventually([&] { return shared->lock.snapshot().parked_readers == 1; }));
  kill_and_reap(child);
  shared->lock.unlock();  // promotes the dead queued reader
  Result<RwRecovery> recovery = shared->lock.recover();
  ASSERT_TRUE(recovery.has_value());
  EXPECT_EQ(recovery->read_holds_released, 0u);
  EXPECT_EQ(recovery->read_holds_unresolved, 1u);
  EXPECT_EQ(shared->lock.snapshot().readers, 1u);  // left counted: safe, not live
}

// Attached to no participant table: the holds work but are not recorded.
TEST(RobustRwLockCrashAnonymous, AProcessWithoutAnOwnerIdIsAnonymous) {
  ASSERT_EQ(lock_owner_id(), 0u);
  test::SharedObject<Shared> shared(RwPolicy::phase_fair);
  shared->lock.lock_shared();
  Result<RwRecovery> recovery = shared->lock.recover([](std::uint32_t) { return true; });
  ASSERT_TRUE(recovery.has_value());
  EXPECT_EQ(recovery->read_holds_released, 0u);  // nothing recorded, nothing released
  EXPECT_EQ(shared->lock.snapshot().readers, 1u);
  shared->lock.unlock_shared();
}

}  // namespace
}  // namespace xproc::sync
