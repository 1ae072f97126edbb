// xproc_cond_* and xproc_condattr_*: monotonic deadlines, wake-ups, and a hand-off between two
// processes through a process-shared mutex and condition variable.

#include <gtest/gtest.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <thread>
#include <vector>

#include "c_test_support.h"
#include "child_process.h"
#include "shared_object.h"
#include "xproc/c/sync.h"

namespace xproc::test {
namespace {

using std::chrono::milliseconds;

TEST(CCond, AttributesAcceptOnlyTheMonotonicClock) {
  xproc_condattr_t attr;
  ASSERT_EQ(xproc_condattr_init(&attr), 0);
  clockid_t clock = CLOCK_REALTIME;
  EXPECT_EQ(xproc_condattr_getclock(&attr, &clock), 0);
  EXPECT_EQ(clock, CLOCK_MONOTONIC);
  EXPECT_EQ(xproc_condattr_setclock(&attr, CLOCK_MONOTONIC), 0);
  EXPECT_EQ(xproc_condattr_setclock(&attr, CLOCK_REALTIME), EINVAL);
  EXPECT_EQ(xproc_condattr_setclock(&attr, CLOCK_BOOTTIME), EINVAL);
  int pshared = -1;
  EXPECT_EQ(xproc_condattr_getpshared(&attr, &pshared), 0);
  EXPECT_EQ(pshared, XPROC_PROCESS_PRIVATE);
  EXPECT_EQ(xproc_condattr_setpshared(&attr, XPROC_PROCESS_SHARED), 0);
  EXPECT_EQ(xproc_condattr_getpshared(&attr, &pshared), 0);
  EXPECT_EQ(pshared, XPROC_PROCESS_SHARED);
  EXPECT_EQ(xproc_condattr_setpshared(&attr, 7), EINVAL);
  xproc_cond_t cond;
  EXPECT_EQ(xproc_cond_init(&cond, &attr), 0);
  EXPECT_EQ(xproc_cond_destroy(&cond), 0);
  EXPECT_EQ(xproc_condattr_destroy(&attr), 0);
  EXPECT_EQ(xproc_condattr_setclock(&attr, CLOCK_MONOTONIC), EINVAL);  // destroyed
}

TEST(CCond, TimedwaitReturnsTimedOutWithTheMutexHeldAgain) {
  xproc_mutex_t mutex = XPROC_MUTEX_INITIALIZER;
  xproc_cond_t cond = XPROC_COND_INITIALIZER;
  ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
  const timespec past = monotonic_in(milliseconds(-1));
  EXPECT_EQ(xproc_cond_timedwait(&cond, &mutex, &past), ETIMEDOUT);
  const timespec soon = monotonic_in(milliseconds(10));
  EXPECT_EQ(xproc_cond_timedwait(&cond, &mutex, &soon), ETIMEDOUT);
  const timespec bad = bad_timespec();
  EXPECT_EQ(xproc_cond_timedwait(&cond, &mutex, &bad), EINVAL);
  // Still held by this thread after each return.
  std::thread([&] { EXPECT_EQ(xproc_mutex_trylock(&mutex), EBUSY); }).join();
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  EXPECT_EQ(xproc_cond_destroy(&cond), 0);
}

TEST(CCond, SignalAndBroadcastWithoutWaitersDoNothing) {
  xproc_cond_t cond;
  ASSERT_EQ(xproc_cond_init(&cond, nullptr), 0);
  EXPECT_EQ(xproc_cond_signal(&cond), 0);
  EXPECT_EQ(xproc_cond_broadcast(&cond), 0);
  EXPECT_EQ(xproc_cond_destroy(&cond), 0);
}

TEST(CCond, BroadcastWakesEveryWaiterAndSignalWakesOne) {
  xproc_mutex_t mutex = XPROC_MUTEX_INITIALIZER;
  xproc_cond_t cond = XPROC_COND_INITIALIZER;
  constexpr int kWaiters = 4;
  int waiting = 0;
  int generation = 0;
  int woken = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < kWaiters; ++i) {
    threads.emplace_back([&] {
      EXPECT_EQ(xproc_mutex_lock(&mutex), 0);
      const int seen = generation;
      ++waiting;
      EXPECT_EQ(xproc_cond_broadcast(&cond), 0);  // tells the main thread
      while (generation == seen) EXPECT_EQ(xproc_cond_wait(&cond, &mutex), 0);
      ++woken;
      EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
    });
  }
  ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
  while (waiting < kWaiters) ASSERT_EQ(xproc_cond_wait(&cond, &mutex), 0);
  ++generation;
  EXPECT_EQ(xproc_cond_broadcast(&cond), 0);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(woken, kWaiters);

  // signal: one waiter, woken by one signal.
  int flag = 0;
  std::thread waiter([&] {
    EXPECT_EQ(xproc_mutex_lock(&mutex), 0);
    flag = 1;
    EXPECT_EQ(xproc_cond_signal(&cond), 0);
    while (flag != 2) EXPECT_EQ(xproc_cond_wait(&cond, &mutex), 0);
    EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  });
  ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
  while (flag != 1) ASSERT_EQ(xproc_cond_wait(&cond, &mutex), 0);
  flag = 2;
  EXPECT_EQ(xproc_cond_signal(&cond), 0);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  waiter.join();
}

TEST(CCond, DestroyWithABlockedWaiterIsBusyAndSucceedsOnceItLeft) {
  xproc_mutex_t mutex = XPROC_MUTEX_INITIALIZER;
  xproc_cond_t cond = XPROC_COND_INITIALIZER;
  int state = 0;  // 1: the waiter is about to wait; 2: it may leave
  std::thread waiter([&] {
    EXPECT_EQ(xproc_mutex_lock(&mutex), 0);
    state = 1;
    while (state != 2) {
      const timespec deadline = monotonic_in(std::chrono::seconds(20));
      EXPECT_EQ(xproc_cond_timedwait(&cond, &mutex, &deadline), 0);
    }
    EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  });
  // Once this thread holds the mutex with state == 1, the waiter is inside its wait.
  for (;;) {
    ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
    if (state == 1) break;
    ASSERT_EQ(xproc_mutex_unlock(&mutex), 0);
    std::this_thread::yield();
  }
  EXPECT_EQ(xproc_cond_destroy(&cond), EBUSY);  // after a bounded wait for it to leave
  state = 2;
  EXPECT_EQ(xproc_cond_signal(&cond), 0);
  // Destroying right after the wake-up is allowed, even with the mutex still held here.
  EXPECT_EQ(xproc_cond_destroy(&cond), 0);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  waiter.join();
}

TEST(CCond, WaitWithoutHoldingAnErrorCheckingMutexIsPerm) {
  xproc_mutexattr_t attr;
  ASSERT_EQ(xproc_mutexattr_init(&attr), 0);
  ASSERT_EQ(xproc_mutexattr_settype(&attr, XPROC_MUTEX_ERRORCHECK), 0);
  xproc_mutex_t mutex;
  ASSERT_EQ(xproc_mutex_init(&mutex, &attr), 0);
  xproc_cond_t cond = XPROC_COND_INITIALIZER;
  EXPECT_EQ(xproc_cond_wait(&cond, &mutex), EPERM);
  const timespec soon = monotonic_in(milliseconds(10));
  EXPECT_EQ(xproc_cond_timedwait(&cond, &mutex, &soon), EPERM);
  EXPECT_EQ(xproc_mutex_destroy(&mutex), 0);
}

struct RobustWait {
  xproc_mutex_t mutex;
  xproc_cond_t cond;
  int flag;
};

TEST(CCond, AWaiterReacquiringAMutexWhoseOwnerDiedGetsOwnerDead) {
  SharedObject<RobustWait> shared;
  xproc_mutexattr_t mutex_attr;
  ASSERT_EQ(xproc_mutexattr_init(&mutex_attr), 0);
  ASSERT_EQ(xproc_mutexattr_setpshared(&mutex_attr, XPROC_PROCESS_SHARED), 0);
  ASSERT_EQ(xproc_mutexattr_setrobust(&mutex_attr, XPROC_MUTEX_ROBUST), 0);
  ASSERT_EQ(xproc_mutex_init(&shared->mutex, &mutex_attr), 0);
  xproc_condattr_t cond_attr;
  ASSERT_EQ(xproc_condattr_init(&cond_attr), 0);
  ASSERT_EQ(xproc_condattr_setpshared(&cond_attr, XPROC_PROCESS_SHARED), 0);
  ASSERT_EQ(xproc_cond_init(&shared->cond, &cond_attr), 0);
  ASSERT_EQ(xproc_mutex_lock(&shared->mutex), 0);
  // The child gets the mutex only once this thread waits; it signals and dies holding it.
  auto child = Child::start([&] {
    if (xproc_mutex_lock(&shared->mutex) != 0) return 1;
    shared->flag = 1;
    if (xproc_cond_signal(&shared->cond) != 0) return 2;
    _exit(0);
  });
  int result = 0;
  while (shared->flag == 0 && result == 0) {
    const timespec deadline = monotonic_in(std::chrono::seconds(20));
    result = xproc_cond_timedwait(&shared->cond, &shared->mutex, &deadline);
  }
  EXPECT_EQ(result, EOWNERDEAD);
  EXPECT_EQ(shared->flag, 1);
  EXPECT_EQ(xproc_mutex_consistent(&shared->mutex), 0);
  EXPECT_EQ(xproc_mutex_unlock(&shared->mutex), 0);
  EXPECT_TRUE(child.wait(std::chrono::seconds(30)).ok());
}

// A process-shared mutex and condition variable passing a token between two processes.
struct HandOff {
  xproc_mutex_t mutex;
  xproc_cond_t cond;
  long turn;  // even: parent's turn, odd: child's
};

int take_turns(HandOff& shared, long parity, long rounds) {
  for (long round = 0; round < rounds; ++round) {
    if (xproc_mutex_lock(&shared.mutex) != 0) return 1;
    while (shared.turn % 2 != parity) {
      const timespec deadline = monotonic_in(std::chrono::seconds(20));
      if (xproc_cond_timedwait(&shared.cond, &shared.mutex, &deadline) != 0) return 2;
    }
    ++shared.turn;
    if (xproc_cond_signal(&shared.cond) != 0) return 3;
    if (xproc_mutex_unlock(&shared.mutex) != 0) return 4;
  }
  return 0;
}

TEST(CCond, ProcessSharedMutexAndCondHandATokenBackAndForth) {
  SharedObject<HandOff> shared;
  xproc_mutexattr_t mutex_attr;
  ASSERT_EQ(xproc_mutexattr_init(&mutex_attr), 0);
  ASSERT_EQ(xproc_mutexattr_setpshared(&mutex_attr, XPROC_PROCESS_SHARED), 0);
  ASSERT_EQ(xproc_mutex_init(&shared->mutex, &mutex_attr), 0);
  xproc_condattr_t cond_attr;
  ASSERT_EQ(xproc_condattr_init(&cond_attr), 0);
  ASSERT_EQ(xproc_condattr_setpshared(&cond_attr, XPROC_PROCESS_SHARED), 0);
  ASSERT_EQ(xproc_cond_init(&shared->cond, &cond_attr), 0);
  const long rounds = scaled(500);
  auto child = Child::start([&] { return take_turns(*shared, 1, rounds); });
  EXPECT_EQ(take_turns(*shared, 0, rounds), 0);
  const ChildStatus status = child.wait(std::chrono::seconds(60));
  EXPECT_TRUE(status.ok()) << "child exit " << status.exit_code;
  EXPECT_EQ(shared->turn, 2 * rounds);
  EXPECT_EQ(xproc_cond_destroy(&shared->cond), 0);
  EXPECT_EQ(xproc_mutex_destroy(&shared->mutex), 0);
}

}  // namespace
}  // namespace xproc::test
