// RobustRwLock across processes: exclusion holds, and the owner table balances (after every
// process finished, nothing is left recorded).

#include "xproc/sync/robust_rw_lock.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "child_process.h"
#include "robust_rw_lock_table_file.h"
#include "shared_object.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

struct SharedData {
  explicit SharedData(RwPolicy policy) : lock(Scope::process, policy) {}
  RobustRwLock lock;
  std::array<std::uint64_t, 8> slots{};  // all equal outside a write
  std::uint64_t writes = 0;
};

class RobustRwLockProcessTest : public ::testing::TestWithParam<RwPolicy> {};

INSTANTIATE_TEST_SUITE_P(AllPolicies, RobustRwLockProcessTest,
                         ::testing::Values(RwPolicy::prefer_reader, RwPolicy::prefer_writer,
                                           RwPolicy::phase_fair));

int hammer(SharedData& shared, unsigned seed, long iterations) {
  std::minstd_rand random(seed);
  int violations = 0;
  for (long i = 0; i < iterations; ++i) {
    const unsigned choice = random() % 8;
    if (choice == 0) {
      if (!shared.lock.try_lock_for(1ms)) continue;
      const std::uint64_t value = shared.slots[0];
      for (std::uint64_t& slot : shared.slots) {
        if (slot != value) ++violations;
        slot = value + 1;
      }
      ++shared.writes;
      shared.lock.unlock();
    } else {
      const bool timed = choice == 1;
      if (timed ? !shared.lock.try_lock_shared_for(1ms) : (shared.lock.lock_shared(), false)) {
        continue;
      }
      if (choice == 2) {
        shared.lock.lock_shared();
        shared.lock.unlock_shared();
      }
      for (const std::uint64_t& slot : shared.slots) {
        if (slot != shared.slots[0]) ++violations;
      }
      shared.lock.unlock_shared();
    }
  }
  return violations;
}

TEST_P(RobustRwLockProcessTest, OwnerTableBalancesAfterConcurrentUse) {
  test::SharedObject<SharedData> shared(GetParam());
  test_support::RwLockTableFile table;
  const long iterations = test::scaled(2000);
  std::vector<test::Child> children;
  for (std::uint32_t p = 0; p < 3; ++p) {
    children.push_back(test::Child::start([&, p] {
      Result<Participant> me = table.attach();  // the lock then records this process
      if (!me || lock_owner_id() != me->id().pack()) return 2;
      std::atomic<int> violations{0};
      std::vector<std::thread> threads;
      for (unsigned t = 0; t < 2; ++t) {
        threads.emplace_back([&, t] { violations += hammer(*shared, p * 10 + t + 1, iterations); });
      }
      for (auto& thread : threads) thread.join();
      return violations.load() == 0 ? 0 : 1;
    }));
  }
  for (auto& child : children) EXPECT_TRUE(child.wait(60s).ok());
  // Every process is gone: recovery must find nothing left behind.
  Result<RwRecovery> recovery = shared->lock.recover([](std::uint32_t) { return true; });
  ASSERT_TRUE(recovery.has_value()) << recovery.error().message();
  EXPECT_EQ(recovery->read_holds_released, 0u);
  EXPECT_EQ(recovery->read_holds_unresolved, 0u);
  EXPECT_FALSE(recovery->write_lock_released);
  EXPECT_FALSE(recovery->stage_released);
  const RwLockSnapshot view = shared->lock.snapshot();
  EXPECT_EQ(view.readers, 0u);
  EXPECT_FALSE(view.writer_staged);
  for (const std::uint64_t& slot : shared->slots) EXPECT_EQ(slot, shared->writes);
}

}  // namespace
}  // namespace xproc::sync
