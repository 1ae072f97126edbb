// Multi-process tests of xproc::sync::RwLock with Scope::process on MAP_SHARED memory: the
// exclusion invariant across processes and threads, recursive reads across processes, fork().

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "eventually.h"
#include "rw_policy_names.h"
#include "shared_object.h"
#include "xproc/sync/rw_lock.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

using test::eventually;

struct SharedData {
  explicit SharedData(RwPolicy policy) : lock(Scope::process, policy) {}
  RwLock lock;
  // Writers set every slot to the same new value; a reader that sees two different values saw a
  // write in progress.
  std::array<std::uint64_t, 16> slots{};
  std::uint64_t writes = 0;  // protected by the write lock
};

class RwLockProcessTest : public ::testing::TestWithParam<RwPolicy> {};

INSTANTIATE_TEST_SUITE_P(AllPolicies, RwLockProcessTest, test::kAllRwPolicies,
                         test::rw_policy_name);

// Returns the number of torn reads and broken exclusions seen.
int hammer(SharedData& shared, unsigned seed, long iterations) {
  std::minstd_rand random(seed);
  int violations = 0;
  for (long i = 0; i < iterations; ++i) {
    const unsigned choice = random() % 8;
    if (choice == 0) {
      shared.lock.lock();
      const std::uint64_t value = shared.slots[0];
      for (std::uint64_t& slot : shared.slots) {
        if (slot != value) ++violations;
        slot = value + 1;
        if (&slot == &shared.slots[8] && i % 8 == 0) std::this_thread::yield();  // widen it
      }
      ++shared.writes;
      shared.lock.unlock();
    } else {
      const bool timed = choice == 1;
      if (timed ? !shared.lock.try_lock_shared_for(1ms) : (shared.lock.lock_shared(), false)) {
        continue;
      }
      const std::uint64_t value = shared.slots[0];
      if (choice == 2) {  // recursive hold
        shared.lock.lock_shared();
        shared.lock.unlock_shared();
      }
      for (const std::uint64_t& slot : shared.slots) {
        if (slot != value) ++violations;
      }
      shared.lock.unlock_shared();
    }
  }
  return violations;
}

TEST_P(RwLockProcessTest, ProcessesAndThreadsNeverSeeATornWrite) {
  test::SharedObject<SharedData> shared(GetParam());
  const long iterations = test::scaled(3000);
  constexpr int kProcesses = 3;
  constexpr int kThreadsPerProcess = 2;
  std::vector<test::Child> children;
  for (int p = 0; p < kProcesses; ++p) {
    children.push_back(test::Child::start([&, p] {
      std::atomic<int> violations{0};
      std::vector<std::thread> threads;
      for (int t = 0; t < kThreadsPerProcess; ++t) {
        threads.emplace_back([&, t] {
          violations += hammer(*shared, static_cast<unsigned>(p * 10 + t + 1), iterations);
        });
      }
      for (auto& thread : threads) thread.join();
      return violations.load() == 0 ? 0 : 1;
    }));
  }
  for (auto& child : children) EXPECT_TRUE(child.wait(60s).ok());
  shared->lock.lock_shared();
  for (const std::uint64_t& slot : shared->slots) EXPECT_EQ(slot, shared->writes);
  EXPECT_GT(shared->writes, 0u);
  shared->lock.unlock_shared();
  const RwLockSnapshot view = shared->lock.snapshot();
  EXPECT_EQ(view.readers, 0u);
  EXPECT_FALSE(view.writer_staged);
  EXPECT_EQ(view.queued_readers + view.queued_writers, 0u);
}

// A reader in this process takes its read lock again while a writer of another process is parked
// on the same lock: it must pass the writer.
TEST_P(RwLockProcessTest, RecursiveReadPassesAWriterParkedInAnotherProcess) {
  test::SharedObject<SharedData> shared(GetParam());
  shared->lock.lock_shared();
  test::Child writer = test::Child::start([&] {
    shared->lock.lock();
    shared->writes = 1;
    shared->lock.unlock();
    return 0;
  });
  ASSERT_TRUE(eventually([&] { return shared->lock.snapshot().parked_drainers == 1; }));
  ASSERT_TRUE(shared->lock.try_lock_shared_for(1s));
  shared->lock.lock_shared();
  EXPECT_EQ(shared->writes, 0u);
  shared->lock.unlock_shared();
  shared->lock.unlock_shared();
  shared->lock.unlock_shared();
  EXPECT_TRUE(writer.wait(10s).ok());
  shared->lock.lock_shared();
  EXPECT_EQ(shared->writes, 1u);
  shared->lock.unlock_shared();
}

// prefer_writer across processes: a reader of a third process waits for a writer parked in
// another process; it gets in after that writer.
TEST(RwLockProcess, PreferWriterHoldsBackReadersOfOtherProcesses) {
  test::SharedObject<SharedData> shared(RwPolicy::prefer_writer);
  shared->lock.lock_shared();
  test::Child writer = test::Child::start([&] {
    shared->lock.lock();
    shared->writes = 1;
    shared->lock.unlock();
    return 0;
  });
  ASSERT_TRUE(eventually([&] { return shared->lock.snapshot().parked_drainers == 1; }));
  test::Child reader = test::Child::start([&] {
    if (shared->lock.try_lock_shared()) return 1;
    shared->lock.lock_shared();
    const bool after_writer = shared->writes == 1;
    shared->lock.unlock_shared();
    return after_writer ? 0 : 2;
  });
  ASSERT_TRUE(eventually([&] { return shared->lock.snapshot().parked_readers == 1; }));
  shared->lock.unlock_shared();
  EXPECT_TRUE(writer.wait(10s).ok());
  const test::ChildStatus status = reader.wait(10s);
  EXPECT_TRUE(status.ok()) << "exit code " << status.exit_code;
}

// fork(): the child holds none of the parent's read holds; the parent's hold stays counted.
TEST_P(RwLockProcessTest, ForkChildHoldsNoLocks) {
  test::SharedObject<SharedData> shared(GetParam());
  shared->lock.lock_shared();
  test::Child child = test::Child::start([&] {
    if (shared->lock.release_shared() != errc::not_owner) return 1;
    if (shared->lock.try_acquire() != errc::would_block) return 2;  // the parent's hold counts
    if (shared->lock.snapshot().readers != 1) return 3;
    if (shared->lock.acquire_shared() != std::error_code{}) return 4;  // its own, not recursive
    if (shared->lock.snapshot().readers != 2) return 5;
    if (shared->lock.release_shared() != std::error_code{}) return 6;
    return 0;
  });
  const test::ChildStatus status = child.wait(10s);
  EXPECT_TRUE(status.ok()) << "exit code " << status.exit_code;
  EXPECT_EQ(shared->lock.snapshot().readers, 1u);
  EXPECT_EQ(shared->lock.release_shared(), std::error_code{});
  EXPECT_TRUE(shared->lock.try_lock());
  shared->lock.unlock();
}

}  // namespace
}  // namespace xproc::sync
