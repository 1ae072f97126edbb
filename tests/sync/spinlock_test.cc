// Thread-level tests of xproc::sync::Spinlock: mutual exclusion with exact counts, try_lock,
// timed attempts at past / near / far deadlines, std lock wrappers.
#include "xproc/sync/spinlock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "child_process.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

TEST(Spinlock, ZeroFilledIsUnlocked) {
  alignas(Spinlock) unsigned char bytes[sizeof(Spinlock)] = {};
  auto* lock = reinterpret_cast<Spinlock*>(bytes);
  EXPECT_FALSE(lock->is_locked());
  EXPECT_TRUE(lock->try_lock());
  EXPECT_TRUE(lock->is_locked());
  lock->unlock();
}

TEST(Spinlock, TryLockFailsWhileHeldAndSucceedsAfterUnlock) {
  Spinlock lock;
  lock.lock();
  EXPECT_FALSE(lock.try_lock());
  std::thread other([&] { EXPECT_FALSE(lock.try_lock()); });
  other.join();
  lock.unlock();
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
}

TEST(Spinlock, TryLockUntilAPastDeadlineMakesOneAttempt) {
  Spinlock lock;
  EXPECT_TRUE(lock.try_lock_until(Clock::now() - 1s));
  EXPECT_FALSE(lock.try_lock_until(Clock::now() - 1s));
  lock.unlock();
}

TEST(Spinlock, TryLockForANearDeadlineGivesUpNoEarlier) {
  Spinlock lock(Scope::thread);
  lock.lock();
  const auto start = Clock::now();
  EXPECT_FALSE(lock.try_lock_for(20ms));
  EXPECT_GE(Clock::now() - start, 20ms);
  EXPECT_FALSE(lock.try_lock_until(std::chrono::system_clock::now() + 5ms));
  lock.unlock();
}

TEST(Spinlock, TryLockUntilAFarDeadlineGetsTheLockWhenReleased) {
  Spinlock lock;
  lock.lock();
  std::atomic<bool> started{false};
  std::thread waiter([&] {
    started.store(true);
    EXPECT_TRUE(lock.try_lock_until(Clock::now() + 3600s));
    lock.unlock();
  });
  while (!started.load()) std::this_thread::yield();
  lock.unlock();
  waiter.join();
  EXPECT_FALSE(lock.is_locked());
}

TEST(Spinlock, ThreadsIncrementAPlainCounterExactly) {
  Spinlock lock;
  long counter = 0;  // plain data: the lock protects it
  constexpr int kThreads = 4;
  const long per_thread = test::scaled(50000);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (long i = 0; i < per_thread; ++i) {
        if (t % 2 == 0) {
          std::lock_guard guard(lock);
          ++counter;
        } else {
          std::unique_lock guard(lock, std::defer_lock);
          while (!guard.try_lock_for(1s)) {
          }
          ++counter;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter, kThreads * per_thread);
  EXPECT_FALSE(lock.is_locked());
}

}  // namespace
}  // namespace xproc::sync
