// What each primitive's fork() child sees, as each header's banner documents it ("fork():"
// paragraph): CondVar, Semaphore, Barrier, Spinlock, EventCount, Once. (Mutex, RwLock and
// ParticipantTable have their fork tests next to their other process tests.)
// Each child returns 0 on success and a distinct code per failed check, so a failure names the
// check; every child is waited with a timeout; events are ordered by handshakes, never sleeps.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <system_error>
#include <thread>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/barrier.h"
#include "xproc/sync/cond_var.h"
#include "xproc/sync/event_count.h"
#include "xproc/sync/mutex.h"
#include "xproc/sync/once.h"
#include "xproc/sync/scope.h"
#include "xproc/sync/semaphore.h"
#include "xproc/sync/spinlock.h"
#include "xproc/sys/error.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

constexpr auto kChildTimeout = 20s;
constexpr auto kHandshakeTimeout = 10s;

// Yields until pred() holds; false after kHandshakeTimeout (a test failure, never a hang).
template <class Pred>
bool eventually(Pred pred) {
  const auto deadline = Clock::now() + kHandshakeTimeout;
  while (!pred()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

// ---- CondVar: "a Scope::process condvar keeps working across fork (the child is one more
// process mapping it)".

struct CondVarShared {
  Mutex mutex{Scope::process};
  CondVar cond{Scope::process};
  bool flag = false;  // protected by mutex
};

TEST(ForkChild, NotifiesAProcessCondVarAndWakesTheParentsWaiter) {
  test::SharedObject<CondVarShared> shared;
  auto child = test::Child::start([&] {
    // The parent has announced itself as a waiter (and so released the mutex inside wait).
    if (!eventually([&] { return shared->cond.waiter_count() >= 1; })) return 1;
    if (shared->mutex.acquire()) return 2;
    shared->flag = true;
    if (shared->mutex.release()) return 3;
    shared->cond.notify_one();
    return 0;
  });
  ASSERT_FALSE(shared->mutex.acquire());
  // A lost notify would leave the predicate false until the deadline: timed_out.
  const std::error_code waited =
      shared->cond.wait_for(shared->mutex, kHandshakeTimeout, [&] { return shared->flag; });
  EXPECT_FALSE(waited) << waited.message();
  EXPECT_TRUE(shared->flag);
  ASSERT_FALSE(shared->mutex.release());
  const auto status = child.wait(kChildTimeout);
  EXPECT_TRUE(status.ok()) << "child exit " << status.exit_code;
}

// ---- Semaphore: "a Scope::process semaphore keeps working (the child is one more participant).
// The child's copy of a Scope::thread semaphore keeps its value".

struct SemaphoreShared {
  Semaphore semaphore{Scope::process, 2};
  std::atomic<int> stage{0};
};

TEST(ForkChild, SeesTheParentsSemaphoreCountAndItsPostsWakeTheParent) {
  test::SharedObject<SemaphoreShared> shared;
  Semaphore& semaphore = shared->semaphore;
  ASSERT_FALSE(semaphore.try_wait());  // 2 -> 1 before the fork
  auto child = test::Child::start([&] {
    if (semaphore.value() != 1) return 1;
    if (semaphore.try_wait()) return 2;  // the parent's remaining unit, 1 -> 0
    if (semaphore.try_wait() != errc::would_block) return 3;
    // release: publishes the take before the parent starts waiting.
    shared->stage.store(1, std::memory_order_release);
    // The parent is (about to be) parked in wait_for: our post must wake it.
    if (!eventually([&] { return semaphore.waiters() >= 1; })) return 4;
    if (semaphore.post()) return 5;
    return 0;
  });
  // acquire: pairs with the child's release store of stage 1.
  ASSERT_TRUE(eventually([&] { return shared->stage.load(std::memory_order_acquire) == 1; }));
  EXPECT_EQ(semaphore.value(), 0u);  // the child's take is seen by the parent
  // The child took the last unit, so this blocks until the child's post.
  const std::error_code waited = semaphore.wait_for(kHandshakeTimeout);
  EXPECT_FALSE(waited) << waited.message();
  const auto status = child.wait(kChildTimeout);
  EXPECT_TRUE(status.ok()) << "child exit " << status.exit_code;
  EXPECT_EQ(semaphore.value(), 0u);
}

TEST(ForkChild, KeepsTheValueOfItsCopyOfAThreadSemaphore) {
  Semaphore semaphore(Scope::thread, 3u);
  auto child = test::Child::start([&] {
    if (semaphore.value() != 3) return 1;
    for (int i = 0; i < 3; ++i) {
      if (semaphore.try_wait()) return 2;
    }
    if (semaphore.try_wait() != errc::would_block) return 3;
    return 0;
  });
  const auto status = child.wait(kChildTimeout);
  EXPECT_TRUE(status.ok()) << "child exit " << status.exit_code;
  EXPECT_EQ(semaphore.value(), 3u);  // the child's takes were on its own copy
}

// ---- Barrier: "a Scope::process barrier keeps working (the child may be a participant). The
// child's copy of a Scope::thread barrier keeps the parent's arrival count of the moment".

struct BarrierShared {
  Barrier barrier{Scope::process, 2};
  std::atomic<int> serials{0};
};

TEST(ForkChild, PassesAProcessBarrierOfTwoWithTheParentGenerationAfterGeneration) {
  constexpr int kGenerations = 3;
  test::SharedObject<BarrierShared> shared;
  auto child = test::Child::start([&] {
    for (int i = 0; i < kGenerations; ++i) {
      auto arrival = shared->barrier.arrive_and_wait_for(kHandshakeTimeout);
      if (!arrival) return 1;
      // relaxed: only counted; the parent reads it after waiting for this process.
      if (*arrival == Arrival::serial) shared->serials.fetch_add(1, std::memory_order_relaxed);
    }
    return 0;
  });
  for (int i = 0; i < kGenerations; ++i) {
    auto arrival = shared->barrier.arrive_and_wait_for(kHandshakeTimeout);
    ASSERT_TRUE(arrival) << "generation " << i << ": " << arrival.error().message();
    if (*arrival == Arrival::serial) shared->serials.fetch_add(1, std::memory_order_relaxed);
  }
  const auto status = child.wait(kChildTimeout);
  EXPECT_TRUE(status.ok()) << "child exit " << status.exit_code;
  EXPECT_EQ(shared->serials.load(), kGenerations);  // exactly one serial per generation
  EXPECT_EQ(shared->barrier.arrived(), 0u);
}

TEST(ForkChild, KeepsTheParentsArrivalCountInItsCopyOfAThreadBarrier) {
  Barrier barrier(Scope::thread, 2);
  std::thread arriver([&] { EXPECT_TRUE(barrier.arrive_and_wait_for(kHandshakeTimeout)); });
  ASSERT_TRUE(eventually([&] { return barrier.arrived() == 1; }));
  auto child = test::Child::start([&] {
    if (barrier.arrived() != 1) return 1;
    // The copied arrival counts: the child's arrival is the second, completing the generation
    // at once (nobody to wait for in this process).
    auto arrival = barrier.arrive_and_wait_for(kHandshakeTimeout);
    if (!arrival) return 2;
    if (*arrival != Arrival::serial) return 3;
    if (barrier.arrived() != 0) return 4;
    return 0;
  });
  const auto status = child.wait(kChildTimeout);
  EXPECT_TRUE(status.ok()) << "child exit " << status.exit_code;
  EXPECT_EQ(barrier.arrived(), 1u);  // the parent's barrier did not see the child's arrival
  auto arrival = barrier.arrive_and_wait_for(kHandshakeTimeout);
  ASSERT_TRUE(arrival) << arrival.error().message();
  arriver.join();
}

// ---- Spinlock: "the child's copy (Scope::thread memory) keeps the parent's state of the moment:
// a lock held by another parent thread stays held in the child. In shared memory it keeps
// working."

struct SpinlockShared {
  Spinlock lock{Scope::process};
  std::atomic<int> stage{0};
};

TEST(ForkChild, SeesAProcessSpinlockHeldByTheParentUntilTheParentUnlocks) {
  test::SharedObject<SpinlockShared> shared;
  shared->lock.lock();
  auto child = test::Child::start([&] {
    if (!shared->lock.is_locked()) return 1;
    if (shared->lock.try_lock()) return 2;
    // release: orders the child's failed attempts before the parent's unlock.
    shared->stage.store(1, std::memory_order_release);
    if (!shared->lock.try_lock_for(kHandshakeTimeout)) return 3;  // succeeds after the unlock
    shared->lock.unlock();
    return 0;
  });
  // acquire: pairs with the child's release store of stage 1.
  ASSERT_TRUE(eventually([&] { return shared->stage.load(std::memory_order_acquire) == 1; }));
  EXPECT_TRUE(shared->lock.is_locked());
  shared->lock.unlock();
  const auto status = child.wait(kChildTimeout);
  EXPECT_TRUE(status.ok()) << "child exit " << status.exit_code;
  EXPECT_FALSE(shared->lock.is_locked());
  EXPECT_TRUE(shared->lock.try_lock());
  shared->lock.unlock();
}

TEST(ForkChild, KeepsAThreadSpinlockHeldByAnotherParentThreadHeldForGood) {
  Spinlock lock(Scope::thread);
  std::atomic<int> stage{0};
  std::thread holder([&] {
    lock.lock();
    stage.store(1);
    while (stage.load() != 2) std::this_thread::yield();
    lock.unlock();
  });
  ASSERT_TRUE(eventually([&] { return stage.load() == 1; }));
  auto child = test::Child::start([&] {
    if (!lock.is_locked()) return 1;
    if (lock.try_lock()) return 2;
    // Nobody in this process can unlock it: a bounded attempt fails at its deadline.
    if (lock.try_lock_for(50ms)) return 3;
    return 0;
  });
  const auto status = child.wait(kChildTimeout);
  stage.store(2);
  holder.join();
  EXPECT_TRUE(status.ok()) << "child exit " << status.exit_code;
  EXPECT_TRUE(lock.try_lock());  // the parent's own lock was released by its holder
  lock.unlock();
}

// ---- EventCount: "a Scope::process event count keeps working (the child is one more
// participant). The child's copy of a Scope::thread event count is a fresh object except that
// waiters_ may count the parent's waiters".

TEST(ForkChild, NotifiesAProcessEventCountAndWakesTheParentsWait) {
  test::SharedObject<EventCount> events(Scope::process);
  auto child = test::Child::start([&] {
    // The parent has announced itself (prepare_wait): a notify from now on must reach it.
    if (!eventually([&] { return events->waiters() >= 1; })) return 1;
    events->notify_all();
    return 0;
  });
  const auto key = events->prepare_wait();
  const std::error_code waited = events->wait_for(key, kHandshakeTimeout);
  EXPECT_FALSE(waited) << waited.message();  // timed_out would mean the notify was lost
  const auto status = child.wait(kChildTimeout);
  EXPECT_TRUE(status.ok()) << "child exit " << status.exit_code;
}

TEST(ForkChild, UsesItsCopyOfAThreadEventCountAsAFreshOne) {
  EventCount events(Scope::thread);
  auto child = test::Child::start([&] {
    if (events.waiters() != 0) return 1;
    const auto key = events.prepare_wait();
    events.notify_one();
    if (events.wait_for(key, kHandshakeTimeout)) return 2;  // notified: returns at once
    const auto second = events.prepare_wait();
    if (events.wait_for(second, 10ms) != errc::timed_out) return 3;  // not notified
    if (events.waiters() != 0) return 4;
    return 0;
  });
  const auto status = child.wait(kChildTimeout);
  EXPECT_TRUE(status.ok()) << "child exit " << status.exit_code;
}

// ---- Once: "a Scope::process Once keeps working. The child's copy of a Scope::thread Once keeps
// the state of the moment: "done" stays done; "running" in another parent thread stays running
// for good in the child".

struct OnceShared {
  Once once{Scope::process};
  std::atomic<int> runs{0};
};

TEST(ForkChild, SeesAProcessOnceRunByTheParentAsDoneAndDoesNotRunItAgain) {
  test::SharedObject<OnceShared> shared;
  ASSERT_FALSE(shared->once.call([&] { shared->runs.fetch_add(1); }));
  auto child = test::Child::start([&] {
    if (!shared->once.is_done()) return 1;
    if (shared->once.call([&] { shared->runs.fetch_add(1); })) return 2;
    return 0;
  });
  const auto status = child.wait(kChildTimeout);
  EXPECT_TRUE(status.ok()) << "child exit " << status.exit_code;
  EXPECT_EQ(shared->runs.load(), 1);
}

TEST(ForkChild, RunsAProcessOnceThatTheParentThenSeesAsDone) {
  test::SharedObject<OnceShared> shared;
  auto child = test::Child::start([&] {
    if (shared->once.is_done()) return 1;
    if (shared->once.call([&] { shared->runs.fetch_add(1); })) return 2;
    return 0;
  });
  const auto status = child.wait(kChildTimeout);
  ASSERT_TRUE(status.ok()) << "child exit " << status.exit_code;
  EXPECT_TRUE(shared->once.is_done());
  EXPECT_FALSE(shared->once.call([&] { shared->runs.fetch_add(1); }));
  EXPECT_EQ(shared->runs.load(), 1);
}

TEST(ForkChild, SeesAThreadOnceDoneInTheParentAsDone) {
  Once once(Scope::thread);
  int runs = 0;
  ASSERT_FALSE(once.call([&] { ++runs; }));
  auto child = test::Child::start([&] {
    if (!once.is_done()) return 1;
    if (once.call([&] { ++runs; })) return 2;
    if (runs != 1) return 3;
    return 0;
  });
  const auto status = child.wait(kChildTimeout);
  EXPECT_TRUE(status.ok()) << "child exit " << status.exit_code;
  EXPECT_EQ(runs, 1);
}

TEST(ForkChild, SeesAThreadOnceRunningInAnotherParentThreadAsRunningForGood) {
  Once once(Scope::thread);
  std::atomic<int> stage{0};
  std::thread runner([&] {
    EXPECT_FALSE(once.call([&] {
      stage.store(1);
      while (stage.load() != 2) std::this_thread::yield();
    }));
  });
  ASSERT_TRUE(eventually([&] { return stage.load() == 1; }));
  auto child = test::Child::start([&] {
    if (once.is_done()) return 1;
    bool ran = false;
    // Nobody in this process will finish f: the bounded call times out without running it.
    if (once.call_for([&] { ran = true; }, 50ms) != errc::timed_out) return 2;
    if (ran) return 3;
    if (once.is_done()) return 4;
    return 0;
  });
  const auto status = child.wait(kChildTimeout);
  stage.store(2);
  runner.join();
  EXPECT_TRUE(status.ok()) << "child exit " << status.exit_code;
  EXPECT_TRUE(once.is_done());
}

}  // namespace
}  // namespace xproc::sync
