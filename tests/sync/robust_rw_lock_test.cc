// RobustRwLock within one process: it is an RwLock (std lock types, recursion past a parked
// writer), and its owner table balances under concurrent use by many threads.

#include "xproc/sync/robust_rw_lock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <thread>
#include <utility>
#include <vector>

#include "child_process.h"
#include "eventually.h"
#include "robust_rw_lock_table_file.h"
#include "rw_policy_names.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

using test::eventually;

// The test process takes part in a participant table, so the lock records it by participant id.
class RobustRwLockTest : public ::testing::TestWithParam<RwPolicy> {
 protected:
  void SetUp() override {
    Result<Participant> attached = table_.attach();
    ASSERT_TRUE(attached.has_value()) << attached.error().message();
    me_ = std::move(*attached);
    ASSERT_EQ(lock_owner_id(), me_.id().pack());
  }
  void TearDown() override {
    EXPECT_EQ(me_.detach(), std::error_code{});
    EXPECT_EQ(lock_owner_id(), 0u);  // attached to no table: anonymous
  }

  test_support::RwLockTableFile table_;
  Participant me_;
};

INSTANTIATE_TEST_SUITE_P(AllPolicies, RobustRwLockTest, test::kAllRwPolicies, test::rw_policy_name);

TEST_P(RobustRwLockTest, WorksWithStdLockTypesAndRecordsTheOwner) {
  RobustRwLock lock(Scope::process, GetParam());
  const std::uint32_t me = lock_owner_id();
  EXPECT_NE(me, 0u);
  {
    std::shared_lock<RobustRwLock> reader(lock);
    Result<RwRecovery> recovery = lock.recover();  // we live: nothing is released
    ASSERT_TRUE(recovery.has_value());
    EXPECT_EQ(recovery->read_holds_released, 0u);
    recovery = lock.recover([me](std::uint32_t owner) { return owner != me; });
    ASSERT_TRUE(recovery.has_value());
    EXPECT_EQ(recovery->read_holds_released, 0u);
    EXPECT_EQ(lock.snapshot().readers, 1u);
  }
  std::unique_lock<RobustRwLock> writer(lock, 10ms);
  EXPECT_TRUE(writer.owns_lock());
}

TEST_P(RobustRwLockTest, RecursiveReadPassesAParkedWriter) {
  RobustRwLock lock(Scope::process, GetParam());
  lock.lock_shared();
  std::thread writer([&] {
    lock.lock();
    lock.unlock();
  });
  ASSERT_TRUE(eventually([&] { return lock.snapshot().parked_drainers == 1; }));
  ASSERT_TRUE(lock.try_lock_shared());
  lock.unlock_shared();
  lock.unlock_shared();
  writer.join();
}

TEST_P(RobustRwLockTest, OwnerTableBalancesUnderThreads) {
  RobustRwLock lock(Scope::process, GetParam());
  long protected_counter = 0;
  std::atomic<long> writes{0};
  const long iterations = test::scaled(3000);
  auto body = [&](unsigned seed) {
    std::minstd_rand random(seed);
    for (long i = 0; i < iterations; ++i) {
      const unsigned choice = random() % 8;
      if (choice == 0) {
        if (!lock.try_lock_for(1ms)) continue;
        ++protected_counter;
        writes.fetch_add(1);
        lock.unlock();
      } else {
        if (choice == 1 ? !lock.try_lock_shared_for(1ms) : (lock.lock_shared(), false)) continue;
        [[maybe_unused]] volatile long seen = protected_counter;
        if (i % 32 == 0) std::this_thread::yield();
        lock.unlock_shared();
      }
    }
  };
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 4; ++t) threads.emplace_back(body, t + 1);
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(protected_counter, writes.load());
  Result<RwRecovery> recovery = lock.recover([](std::uint32_t) { return true; });
  ASSERT_TRUE(recovery.has_value());
  EXPECT_EQ(recovery->read_holds_released, 0u);
  EXPECT_EQ(recovery->read_holds_unresolved, 0u);
  EXPECT_FALSE(recovery->write_lock_released || recovery->stage_released);
}

}  // namespace
}  // namespace xproc::sync
