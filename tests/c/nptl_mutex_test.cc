// Scenarios of glibc's nptl mutex tests (tst-mutex1..10, tst-mutex-errorcheck), ported to
// xproc's C API: same situations, our own code, xproc's documented answers. The mapping from
// each glibc test to these tests is in docs/design/nptl-test-port.md.

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <cerrno>
#include <thread>
#include <vector>

#include "child_process.h"
#include "nptl_test_support.h"
#include "shared_object.h"
#include "xproc/c/sync.h"

namespace xproc::test {
namespace {

using std::chrono::milliseconds;

constexpr int kAllTypes[] = {XPROC_MUTEX_NORMAL, XPROC_MUTEX_RECURSIVE, XPROC_MUTEX_ERRORCHECK,
                             XPROC_MUTEX_ADAPTIVE};

// tst-mutex1: a default mutex (NULL attribute, fresh attribute, static initializer) goes
// through init, lock, unlock, destroy.
TEST(NptlMutex, DefaultMutexesInitLockUnlockAndDestroy) {
  xproc_mutex_t from_null;
  ASSERT_EQ(xproc_mutex_init(&from_null, nullptr), 0);
  xproc_mutexattr_t attr;
  ASSERT_EQ(xproc_mutexattr_init(&attr), 0);
  xproc_mutex_t from_attr;
  ASSERT_EQ(xproc_mutex_init(&from_attr, &attr), 0);
  ASSERT_EQ(xproc_mutexattr_destroy(&attr), 0);
  xproc_mutex_t from_static = XPROC_MUTEX_INITIALIZER;
  for (xproc_mutex_t* mutex : {&from_null, &from_attr, &from_static}) {
    EXPECT_EQ(xproc_mutex_lock(mutex), 0);
    EXPECT_EQ(xproc_mutex_unlock(mutex), 0);
    EXPECT_EQ(xproc_mutex_destroy(mutex), 0);
  }
}

// tst-mutex2: an error-checking mutex reports every misuse by the owner and by others, and a
// thread blocked in lock gets it when the owner unlocks.
TEST(NptlMutex, ErrorCheckingMutexReportsMisuseAndHandsOverToABlockedThread) {
  xproc_mutex_t mutex;
  ASSERT_EQ(make_mutex(&mutex, XPROC_MUTEX_ERRORCHECK, XPROC_MUTEX_STALLED, XPROC_PROCESS_PRIVATE),
            0);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), EPERM);  // not locked at all
  ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
  EXPECT_EQ(xproc_mutex_trylock(&mutex), EBUSY);
  EXPECT_EQ(xproc_mutex_lock(&mutex), EDEADLK);

  std::atomic<int> stage{0};
  int other_unlock = -1;
  int other_trylock = -1;
  int other_lock = -1;
  std::thread other([&] {
    other_unlock = xproc_mutex_unlock(&mutex);  // not the owner
    other_trylock = xproc_mutex_trylock(&mutex);
    announce(stage, 1);
    other_lock = xproc_mutex_lock(&mutex);  // blocks until the main thread unlocks
    announce(stage, 2);
    if (other_lock == 0) other_lock = xproc_mutex_unlock(&mutex);
  });
  ASSERT_TRUE(await_at_least(stage, 1));
  std::this_thread::sleep_for(milliseconds(20));  // a chance to acquire wrongly, if it could
  EXPECT_EQ(stage.load(), 1) << "lock returned while the mutex was held";
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  other.join();
  EXPECT_EQ(other_unlock, EPERM);
  EXPECT_EQ(other_trylock, EBUSY);
  EXPECT_EQ(other_lock, 0);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), EPERM);  // free again
  EXPECT_EQ(xproc_mutex_destroy(&mutex), 0);
}

// tst-mutex3: a recursive mutex locked several times (lock, trylock, timedlock) stays held for
// others until the matching number of unlocks; a blocked thread gets it after the last one.
TEST(NptlMutex, RecursiveMutexReleasesOnlyAtTheLastUnlockThenHandsOver) {
  xproc_mutex_t mutex;
  ASSERT_EQ(make_mutex(&mutex, XPROC_MUTEX_RECURSIVE, XPROC_MUTEX_STALLED, XPROC_PROCESS_PRIVATE),
            0);
  const timespec deadline = monotonic_in(std::chrono::seconds(10));
  ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
  ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
  ASSERT_EQ(xproc_mutex_trylock(&mutex), 0);
  ASSERT_EQ(xproc_mutex_timedlock(&mutex, &deadline), 0);  // depth 4

  std::atomic<int> stage{0};
  int other_unlock = -1;
  int other_trylock = -1;
  int other_lock = -1;
  std::thread other([&] {
    other_unlock = xproc_mutex_unlock(&mutex);
    other_trylock = xproc_mutex_trylock(&mutex);
    announce(stage, 1);
    other_lock = xproc_mutex_lock(&mutex);
    announce(stage, 2);
    if (other_lock == 0) other_lock = xproc_mutex_unlock(&mutex);
  });
  ASSERT_TRUE(await_at_least(stage, 1));
  for (int depth = 4; depth > 1; --depth) {
    EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
    std::this_thread::sleep_for(milliseconds(5));
    EXPECT_EQ(stage.load(), 1) << "released at depth " << depth - 1;
  }
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);  // the last one
  other.join();
  EXPECT_EQ(other_unlock, EPERM);
  EXPECT_EQ(other_trylock, EBUSY);
  EXPECT_EQ(other_lock, 0);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), EPERM);
  EXPECT_EQ(xproc_mutex_destroy(&mutex), 0);
}

// tst-mutex4: a process-shared mutex in MAP_SHARED memory excludes a forked child while the
// parent holds it, and the parent while the child holds it.
struct SharedMutexAndFlags {
  xproc_mutex_t mutex;
  std::atomic<int> stage{0};
  int child_trylock_while_parent_holds = -1;
};

TEST(NptlMutex, ProcessSharedMutexExcludesParentAndForkedChildInTurn) {
  for (int type : kAllTypes) {
    SCOPED_TRACE(testing::Message() << "type " << type);
    SharedObject<SharedMutexAndFlags> shared;
    ASSERT_EQ(make_mutex(&shared->mutex, type, XPROC_MUTEX_STALLED, XPROC_PROCESS_SHARED), 0);
    ASSERT_EQ(xproc_mutex_lock(&shared->mutex), 0);
    auto child = Child::start([&] {
      shared->child_trylock_while_parent_holds = xproc_mutex_trylock(&shared->mutex);
      announce(shared->stage, 1);
      if (xproc_mutex_lock(&shared->mutex) != 0) return 1;  // blocks until the parent unlocks
      announce(shared->stage, 2);
      if (!await_at_least(shared->stage, 3)) return 2;  // parent tried while we held it
      return xproc_mutex_unlock(&shared->mutex) == 0 ? 0 : 3;
    });
    ASSERT_TRUE(await_at_least(shared->stage, 1));
    EXPECT_EQ(shared->child_trylock_while_parent_holds, EBUSY);
    EXPECT_EQ(xproc_mutex_unlock(&shared->mutex), 0);
    ASSERT_TRUE(await_at_least(shared->stage, 2));
    EXPECT_EQ(xproc_mutex_trylock(&shared->mutex), EBUSY);
    const timespec soon = monotonic_in(milliseconds(10));
    EXPECT_EQ(xproc_mutex_timedlock(&shared->mutex, &soon), ETIMEDOUT);
    announce(shared->stage, 3);
    EXPECT_TRUE(child.wait(kHandshakeTimeout).ok());
    EXPECT_EQ(xproc_mutex_trylock(&shared->mutex), 0);
    EXPECT_EQ(xproc_mutex_unlock(&shared->mutex), 0);
    EXPECT_EQ(xproc_mutex_destroy(&shared->mutex), 0);
  }
}

// tst-mutex5: timedlock on a mutex another thread holds returns ETIMEDOUT, and not before the
// (absolute, CLOCK_MONOTONIC) deadline; the failed attempt leaves the holder's lock intact.
TEST(NptlMutex, TimedlockOnAHeldMutexTimesOutNoEarlierThanTheDeadline) {
  for (int type : kAllTypes) {
    for (int robust : {XPROC_MUTEX_STALLED, XPROC_MUTEX_ROBUST}) {
      SCOPED_TRACE(testing::Message() << "type " << type << " robust " << robust);
      xproc_mutex_t mutex;
      ASSERT_EQ(make_mutex(&mutex, type, robust, XPROC_PROCESS_PRIVATE), 0);
      ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
      const timespec deadline = monotonic_in(milliseconds(50));
      int result = -1;
      std::chrono::nanoseconds returned_at{};
      std::thread([&] {
        result = xproc_mutex_timedlock(&mutex, &deadline);
        returned_at = monotonic_now();
      }).join();
      EXPECT_EQ(result, ETIMEDOUT);
      EXPECT_GE(returned_at, to_duration(deadline));
      EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
      EXPECT_EQ(xproc_mutex_destroy(&mutex), 0);
    }
  }
}

// tst-mutex-errorcheck: timedlock by the owner of an error-checking mutex is EDEADLK at once
// (not a wait until the deadline).
TEST(NptlMutex, TimedlockByTheOwnerOfAnErrorCheckingMutexIsDeadlockAtOnce) {
  xproc_mutex_t mutex;
  ASSERT_EQ(make_mutex(&mutex, XPROC_MUTEX_ERRORCHECK, XPROC_MUTEX_STALLED, XPROC_PROCESS_PRIVATE),
            0);
  ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
  const auto started = monotonic_now();
  const timespec deadline = monotonic_in(std::chrono::seconds(20));
  EXPECT_EQ(xproc_mutex_timedlock(&mutex, &deadline), EDEADLK);
  EXPECT_LT(monotonic_now() - started, std::chrono::seconds(10));
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
}

// tst-mutex6: glibc's test expects a relock of a default mutex by its owner to hang (checked
// with an alarm). xproc documents EDEADLK instead, for the normal and adaptive kinds alike.
TEST(NptlMutex, RelockOfADefaultMutexByItsOwnerIsDeadlockNotAHang) {
  for (int type : {XPROC_MUTEX_DEFAULT, XPROC_MUTEX_ADAPTIVE}) {
    xproc_mutex_t mutex;
    ASSERT_EQ(make_mutex(&mutex, type, XPROC_MUTEX_STALLED, XPROC_PROCESS_PRIVATE), 0);
    ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
    EXPECT_EQ(xproc_mutex_lock(&mutex), EDEADLK);
    EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  }
}

// tst-mutex7 (and tst-mutex7robust): many threads lock and unlock one mutex in a loop; a plain
// counter incremented under it comes out exact for every type, robust or not.
TEST(NptlMutex, ManyThreadsCountExactlyUnderEveryKindOfMutex) {
  constexpr int kThreads = 8;
  const long rounds = scaled(2000);
  for (int type : kAllTypes) {
    for (int robust : {XPROC_MUTEX_STALLED, XPROC_MUTEX_ROBUST}) {
      SCOPED_TRACE(testing::Message() << "type " << type << " robust " << robust);
      xproc_mutex_t mutex;
      ASSERT_EQ(make_mutex(&mutex, type, robust, XPROC_PROCESS_PRIVATE), 0);
      long counter = 0;
      std::atomic<int> failures{0};
      std::vector<std::thread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
          for (long i = 0; i < rounds; ++i) {
            if (xproc_mutex_lock(&mutex) != 0) failures.fetch_add(1, std::memory_order_relaxed);
            ++counter;
            if (xproc_mutex_unlock(&mutex) != 0) failures.fetch_add(1, std::memory_order_relaxed);
          }
        });
      }
      for (auto& thread : threads) thread.join();
      EXPECT_EQ(failures.load(), 0);
      EXPECT_EQ(counter, kThreads * rounds);
      EXPECT_EQ(xproc_mutex_destroy(&mutex), 0);
    }
  }
}

// tst-mutex7 across processes: forked children count under one process-shared mutex.
struct SharedCounter {
  xproc_mutex_t mutex;
  long counter = 0;
};

TEST(NptlMutex, ManyProcessesCountExactlyUnderAProcessSharedMutex) {
  constexpr int kChildren = 4;
  const long rounds = scaled(2000);
  for (int robust : {XPROC_MUTEX_STALLED, XPROC_MUTEX_ROBUST}) {
    SCOPED_TRACE(testing::Message() << "robust " << robust);
    SharedObject<SharedCounter> shared;
    ASSERT_EQ(make_mutex(&shared->mutex, XPROC_MUTEX_NORMAL, robust, XPROC_PROCESS_SHARED), 0);
    std::vector<Child> children;
    for (int c = 0; c < kChildren; ++c) {
      children.push_back(Child::start([&] {
        for (long i = 0; i < rounds; ++i) {
          if (xproc_mutex_lock(&shared->mutex) != 0) return 1;
          ++shared->counter;
          if (xproc_mutex_unlock(&shared->mutex) != 0) return 2;
        }
        return 0;
      }));
    }
    for (auto& child : children) EXPECT_TRUE(child.wait(kHandshakeTimeout).ok());
    EXPECT_EQ(shared->counter, kChildren * rounds);
    EXPECT_EQ(xproc_mutex_destroy(&shared->mutex), 0);
  }
}

// tst-mutex8 (mutex part): destroying a mutex that is locked (by lock, trylock or timedlock)
// fails with EBUSY and leaves the mutex locked and usable; once unlocked, destroy succeeds.
TEST(NptlMutex, DestroyOfALockedMutexIsBusyAndLeavesItUsable) {
  const timespec deadline = monotonic_in(std::chrono::seconds(10));
  for (int type : kAllTypes) {
    for (int how = 0; how < 3; ++how) {
      SCOPED_TRACE(testing::Message() << "type " << type << " how " << how);
      xproc_mutex_t mutex;
      ASSERT_EQ(make_mutex(&mutex, type, XPROC_MUTEX_STALLED, XPROC_PROCESS_PRIVATE), 0);
      const int locked = how == 0   ? xproc_mutex_lock(&mutex)
                         : how == 1 ? xproc_mutex_trylock(&mutex)
                                    : xproc_mutex_timedlock(&mutex, &deadline);
      ASSERT_EQ(locked, 0);
      EXPECT_EQ(xproc_mutex_destroy(&mutex), EBUSY);
      int other = -1;
      std::thread([&] { other = xproc_mutex_trylock(&mutex); }).join();
      EXPECT_EQ(other, EBUSY);  // still locked after the refused destroy
      EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
      EXPECT_EQ(xproc_mutex_destroy(&mutex), 0);
    }
  }
}

// tst-mutex9: a process-shared recursive mutex locked several times by the parent; a forked
// child's trylock is EBUSY and its timedlock times out, no earlier than its deadline.
struct SharedRecursive {
  xproc_mutex_t mutex;
  std::chrono::nanoseconds::rep child_deadline_ns = 0;
  std::chrono::nanoseconds::rep child_returned_ns = 0;
};

TEST(NptlMutex, ProcessSharedRecursiveMutexHeldByTheParentTimesOutInTheChild) {
  SharedObject<SharedRecursive> shared;
  ASSERT_EQ(
      make_mutex(&shared->mutex, XPROC_MUTEX_RECURSIVE, XPROC_MUTEX_STALLED, XPROC_PROCESS_SHARED),
      0);
  const timespec parent_deadline = monotonic_in(std::chrono::seconds(10));
  ASSERT_EQ(xproc_mutex_lock(&shared->mutex), 0);
  ASSERT_EQ(xproc_mutex_trylock(&shared->mutex), 0);
  ASSERT_EQ(xproc_mutex_timedlock(&shared->mutex, &parent_deadline), 0);
  auto child = Child::start([&] {
    if (xproc_mutex_trylock(&shared->mutex) != EBUSY) return 1;
    if (xproc_mutex_unlock(&shared->mutex) != EPERM) return 2;  // not the owner
    const timespec deadline = monotonic_in(milliseconds(50));
    shared->child_deadline_ns = to_duration(deadline).count();
    if (xproc_mutex_timedlock(&shared->mutex, &deadline) != ETIMEDOUT) return 3;
    shared->child_returned_ns = monotonic_now().count();
    return 0;
  });
  const ChildStatus status = child.wait(kHandshakeTimeout);
  EXPECT_TRUE(status.ok()) << "exit code " << status.exit_code;
  EXPECT_GE(shared->child_returned_ns, shared->child_deadline_ns);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(xproc_mutex_unlock(&shared->mutex), 0);
  EXPECT_EQ(xproc_mutex_unlock(&shared->mutex), EPERM);
  EXPECT_EQ(xproc_mutex_destroy(&shared->mutex), 0);
}

// tst-mutex10: threads released together by a barrier all trylock the same free mutex; in
// every round exactly one of them wins.
TEST(NptlMutex, ConcurrentTrylockOfAFreeMutexHasExactlyOneWinnerPerRound) {
  constexpr int kThreads = 4;
  const long rounds = scaled(300);
  xproc_mutex_t mutex = XPROC_MUTEX_INITIALIZER;
  std::atomic<int> winners{0};
  std::atomic<long> bad_rounds{0};
  long phase = 0;  // touched only by the completion step, which runs alone
  std::barrier sync(kThreads, [&]() noexcept {
    // Two phases per round: trylock | unlock. After the trylock phase exactly one thread won;
    // after the unlock phase the winner has reset the count (and released the mutex).
    const int expected = phase % 2 == 0 ? 1 : 0;
    if (winners.load(std::memory_order_relaxed) != expected) bad_rounds.fetch_add(1);
    ++phase;
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (long round = 0; round < rounds; ++round) {
        const int code = xproc_mutex_trylock(&mutex);
        if (code == 0) winners.fetch_add(1, std::memory_order_relaxed);
        if (code != 0 && code != EBUSY) bad_rounds.fetch_add(1);
        sync.arrive_and_wait();  // everyone tried; the completion checked the winners
        if (code == 0) {
          winners.store(0, std::memory_order_relaxed);
          if (xproc_mutex_unlock(&mutex) != 0) bad_rounds.fetch_add(1);
        }
        sync.arrive_and_wait();  // the mutex is free again for the next round
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(bad_rounds.load(), 0);
}

}  // namespace
}  // namespace xproc::test
