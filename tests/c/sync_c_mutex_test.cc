// xproc_mutex_* and xproc_mutexattr_*: pthread's return codes, robust owner death across
// processes, static initialization.

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <thread>

#include "c_test_support.h"
#include "child_process.h"
#include "shared_object.h"
#include "xproc/c/sync.h"

namespace xproc::test {
namespace {

using std::chrono::milliseconds;

// A mutex of the given type/robustness/pshared, initialized through an attribute object.
int init_mutex(xproc_mutex_t* mutex, int type, int robust, int pshared) {
  xproc_mutexattr_t attr;
  if (int code = xproc_mutexattr_init(&attr)) return code;
  if (int code = xproc_mutexattr_settype(&attr, type)) return code;
  if (int code = xproc_mutexattr_setrobust(&attr, robust)) return code;
  if (int code = xproc_mutexattr_setpshared(&attr, pshared)) return code;
  const int code = xproc_mutex_init(mutex, &attr);
  EXPECT_EQ(xproc_mutexattr_destroy(&attr), 0);
  return code;
}

// Runs `body` on another thread and returns what it returned.
template <class Body>
int on_other_thread(Body body) {
  int result = -1;
  std::thread([&] { result = body(); }).join();
  return result;
}

TEST(CMutex, StaticInitializerGivesAWorkingDefaultMutex) {
  xproc_mutex_t mutex = XPROC_MUTEX_INITIALIZER;
  EXPECT_EQ(xproc_mutex_lock(&mutex), 0);
  EXPECT_EQ(on_other_thread([&] { return xproc_mutex_trylock(&mutex); }), EBUSY);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  EXPECT_EQ(xproc_mutex_trylock(&mutex), 0);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  EXPECT_EQ(xproc_mutex_destroy(&mutex), 0);
}

TEST(CMutex, AttributeSettersAndGettersRoundTripAndRejectBadValues) {
  xproc_mutexattr_t attr;
  ASSERT_EQ(xproc_mutexattr_init(&attr), 0);
  int value = -1;
  EXPECT_EQ(xproc_mutexattr_gettype(&attr, &value), 0);
  EXPECT_EQ(value, XPROC_MUTEX_DEFAULT);
  EXPECT_EQ(xproc_mutexattr_getpshared(&attr, &value), 0);
  EXPECT_EQ(value, XPROC_PROCESS_PRIVATE);
  EXPECT_EQ(xproc_mutexattr_getrobust(&attr, &value), 0);
  EXPECT_EQ(value, XPROC_MUTEX_STALLED);
  for (int type :
       {XPROC_MUTEX_NORMAL, XPROC_MUTEX_RECURSIVE, XPROC_MUTEX_ERRORCHECK, XPROC_MUTEX_ADAPTIVE}) {
    EXPECT_EQ(xproc_mutexattr_settype(&attr, type), 0);
    EXPECT_EQ(xproc_mutexattr_gettype(&attr, &value), 0);
    EXPECT_EQ(value, type);
  }
  EXPECT_EQ(xproc_mutexattr_settype(&attr, 4), EINVAL);
  EXPECT_EQ(xproc_mutexattr_setpshared(&attr, XPROC_PROCESS_SHARED), 0);
  EXPECT_EQ(xproc_mutexattr_getpshared(&attr, &value), 0);
  EXPECT_EQ(value, XPROC_PROCESS_SHARED);
  EXPECT_EQ(xproc_mutexattr_setpshared(&attr, 2), EINVAL);
  EXPECT_EQ(xproc_mutexattr_setrobust(&attr, XPROC_MUTEX_ROBUST), 0);
  EXPECT_EQ(xproc_mutexattr_getrobust(&attr, &value), 0);
  EXPECT_EQ(value, XPROC_MUTEX_ROBUST);
  EXPECT_EQ(xproc_mutexattr_setrobust(&attr, 2), EINVAL);
  EXPECT_EQ(xproc_mutexattr_gettype(&attr, nullptr), EINVAL);
  EXPECT_EQ(xproc_mutexattr_destroy(&attr), 0);
  // A destroyed (or never initialized) attribute is refused.
  EXPECT_EQ(xproc_mutexattr_settype(&attr, XPROC_MUTEX_NORMAL), EINVAL);
  xproc_mutex_t mutex;
  EXPECT_EQ(xproc_mutex_init(&mutex, &attr), EINVAL);
}

TEST(CMutex, EveryTypeLocksAndUnlocksAndTrylockOfAHeldMutexIsBusy) {
  for (int type :
       {XPROC_MUTEX_NORMAL, XPROC_MUTEX_RECURSIVE, XPROC_MUTEX_ERRORCHECK, XPROC_MUTEX_ADAPTIVE}) {
    for (int robust : {XPROC_MUTEX_STALLED, XPROC_MUTEX_ROBUST}) {
      SCOPED_TRACE(testing::Message() << "type " << type << " robust " << robust);
      xproc_mutex_t mutex;
      ASSERT_EQ(init_mutex(&mutex, type, robust, XPROC_PROCESS_PRIVATE), 0);
      EXPECT_EQ(xproc_mutex_lock(&mutex), 0);
      EXPECT_EQ(on_other_thread([&] { return xproc_mutex_trylock(&mutex); }), EBUSY);
      EXPECT_EQ(xproc_mutex_destroy(&mutex), EBUSY);
      EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
      EXPECT_EQ(on_other_thread([&] {
                  const int code = xproc_mutex_trylock(&mutex);
                  return code != 0 ? code : xproc_mutex_unlock(&mutex);
                }),
                0);
      EXPECT_EQ(xproc_mutex_destroy(&mutex), 0);
    }
  }
  EXPECT_EQ(xproc_mutex_init(nullptr, nullptr), EINVAL);
}

TEST(CMutex, ErrorCheckingRelockIsDeadlockAndForeignUnlockIsPerm) {
  xproc_mutex_t mutex;
  ASSERT_EQ(init_mutex(&mutex, XPROC_MUTEX_ERRORCHECK, XPROC_MUTEX_STALLED, XPROC_PROCESS_PRIVATE),
            0);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), EPERM);  // nobody holds it
  ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
  EXPECT_EQ(xproc_mutex_lock(&mutex), EDEADLK);
  EXPECT_EQ(xproc_mutex_trylock(&mutex), EBUSY);
  EXPECT_EQ(on_other_thread([&] { return xproc_mutex_unlock(&mutex); }), EPERM);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  EXPECT_EQ(xproc_mutex_destroy(&mutex), 0);
}

TEST(CMutex, RecursiveMutexCountsRelocksAndForeignUnlockIsPerm) {
  xproc_mutex_t mutex;
  ASSERT_EQ(init_mutex(&mutex, XPROC_MUTEX_RECURSIVE, XPROC_MUTEX_STALLED, XPROC_PROCESS_PRIVATE),
            0);
  ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
  ASSERT_EQ(xproc_mutex_trylock(&mutex), 0);
  const timespec past = monotonic_in(milliseconds(-1));
  ASSERT_EQ(xproc_mutex_timedlock(&mutex, &past), 0);  // held: no wait, so no timeout
  EXPECT_EQ(on_other_thread([&] { return xproc_mutex_unlock(&mutex); }), EPERM);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  EXPECT_EQ(on_other_thread([&] { return xproc_mutex_trylock(&mutex); }), EBUSY);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  EXPECT_EQ(on_other_thread([&] {
              const int code = xproc_mutex_trylock(&mutex);
              return code != 0 ? code : xproc_mutex_unlock(&mutex);
            }),
            0);
  EXPECT_EQ(xproc_mutex_destroy(&mutex), 0);
}

TEST(CMutex, TimedlockTimesOutAtAPastDeadlineAndRefusesABadTimespec) {
  xproc_mutex_t mutex = XPROC_MUTEX_INITIALIZER;
  const timespec past = monotonic_in(milliseconds(-5));
  const timespec soon = monotonic_in(milliseconds(20));
  const timespec bad = bad_timespec();
  // A free mutex is taken even when the deadline has passed.
  ASSERT_EQ(xproc_mutex_timedlock(&mutex, &past), 0);
  EXPECT_EQ(on_other_thread([&] { return xproc_mutex_timedlock(&mutex, &past); }), ETIMEDOUT);
  EXPECT_EQ(on_other_thread([&] { return xproc_mutex_timedlock(&mutex, &soon); }), ETIMEDOUT);
  EXPECT_EQ(on_other_thread([&] { return xproc_mutex_timedlock(&mutex, &bad); }), EINVAL);
  timespec negative = past;
  negative.tv_nsec = -1;
  EXPECT_EQ(on_other_thread([&] { return xproc_mutex_timedlock(&mutex, &negative); }), EINVAL);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  // The deadline is CLOCK_MONOTONIC: one far in the future of that clock still succeeds at once
  // on a free mutex, and a holder's release lets a timed waiter in before it.
  const timespec later = monotonic_in(std::chrono::seconds(30));
  EXPECT_EQ(xproc_mutex_timedlock(&mutex, &later), 0);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
}

TEST(CMutex, NormalRelockByTheOwnerIsDeadlockNotAHang) {
  xproc_mutex_t mutex;
  ASSERT_EQ(init_mutex(&mutex, XPROC_MUTEX_NORMAL, XPROC_MUTEX_STALLED, XPROC_PROCESS_PRIVATE), 0);
  ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
  EXPECT_EQ(xproc_mutex_lock(&mutex), EDEADLK);
  EXPECT_EQ(xproc_mutex_trylock(&mutex), EBUSY);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  EXPECT_EQ(xproc_mutex_destroy(&mutex), 0);
}

TEST(CMutex, ConsistentOnAHealthyMutexIsInvalid) {
  xproc_mutex_t mutex;
  ASSERT_EQ(init_mutex(&mutex, XPROC_MUTEX_NORMAL, XPROC_MUTEX_ROBUST, XPROC_PROCESS_PRIVATE), 0);
  ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
  EXPECT_EQ(xproc_mutex_consistent(&mutex), EINVAL);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
}

// A robust, process-shared mutex in shared memory, locked by a child that then dies.
struct SharedMutex {
  xproc_mutex_t mutex;
  int data;
};

void lock_in_dying_child(SharedMutex& shared) {
  auto child = Child::start([&] {
    if (xproc_mutex_lock(&shared.mutex) != 0) return 1;
    shared.data = 1;  // "half-way through an update"
    _exit(0);         // dies holding the lock
  });
  ASSERT_TRUE(child.wait(std::chrono::seconds(30)).ok());
}

TEST(CMutex, OwnerDeathInAForkedChildGivesOwnerDeadThenConsistentRepairsIt) {
  SharedObject<SharedMutex> shared;
  ASSERT_EQ(
      init_mutex(&shared->mutex, XPROC_MUTEX_ERRORCHECK, XPROC_MUTEX_ROBUST, XPROC_PROCESS_SHARED),
      0);
  lock_in_dying_child(*shared);
  ASSERT_EQ(xproc_mutex_lock(&shared->mutex), EOWNERDEAD);
  // The caller owns it now: repair, then mark consistent.
  shared->data = 0;
  EXPECT_EQ(xproc_mutex_consistent(&shared->mutex), 0);
  EXPECT_EQ(xproc_mutex_unlock(&shared->mutex), 0);
  EXPECT_EQ(xproc_mutex_lock(&shared->mutex), 0);
  EXPECT_EQ(xproc_mutex_unlock(&shared->mutex), 0);
  EXPECT_EQ(xproc_mutex_destroy(&shared->mutex), 0);
}

TEST(CMutex, UnlockWithoutConsistentMakesTheMutexNotRecoverable) {
  SharedObject<SharedMutex> shared;
  ASSERT_EQ(
      init_mutex(&shared->mutex, XPROC_MUTEX_NORMAL, XPROC_MUTEX_ROBUST, XPROC_PROCESS_SHARED), 0);
  lock_in_dying_child(*shared);
  const timespec later = monotonic_in(std::chrono::seconds(30));
  ASSERT_EQ(xproc_mutex_timedlock(&shared->mutex, &later), EOWNERDEAD);
  EXPECT_EQ(xproc_mutex_unlock(&shared->mutex), 0);
  EXPECT_EQ(xproc_mutex_lock(&shared->mutex), ENOTRECOVERABLE);
  EXPECT_EQ(xproc_mutex_trylock(&shared->mutex), ENOTRECOVERABLE);
  EXPECT_EQ(xproc_mutex_timedlock(&shared->mutex, &later), ENOTRECOVERABLE);
}

TEST(CMutex, TrylockSeesTheOwnerDeathToo) {
  SharedObject<SharedMutex> shared;
  ASSERT_EQ(
      init_mutex(&shared->mutex, XPROC_MUTEX_RECURSIVE, XPROC_MUTEX_ROBUST, XPROC_PROCESS_SHARED),
      0);
  lock_in_dying_child(*shared);
  ASSERT_EQ(xproc_mutex_trylock(&shared->mutex), EOWNERDEAD);
  EXPECT_EQ(xproc_mutex_consistent(&shared->mutex), 0);
  EXPECT_EQ(xproc_mutex_unlock(&shared->mutex), 0);
}

TEST(CMutex, AStalledMutexOfADeadOwnerStaysLockedAndTimedlockTimesOut) {
  SharedObject<SharedMutex> shared;
  ASSERT_EQ(
      init_mutex(&shared->mutex, XPROC_MUTEX_NORMAL, XPROC_MUTEX_STALLED, XPROC_PROCESS_SHARED), 0);
  lock_in_dying_child(*shared);
  const timespec soon = monotonic_in(milliseconds(20));
  EXPECT_EQ(xproc_mutex_timedlock(&shared->mutex, &soon), ETIMEDOUT);
  EXPECT_EQ(xproc_mutex_trylock(&shared->mutex), EBUSY);
}

TEST(CMutex, ProcessSharedMutexExcludesAcrossProcesses) {
  SharedObject<SharedMutex> shared;
  ASSERT_EQ(
      init_mutex(&shared->mutex, XPROC_MUTEX_ADAPTIVE, XPROC_MUTEX_STALLED, XPROC_PROCESS_SHARED),
      0);
  const long rounds = scaled(2000);
  auto work = [&] {
    for (long i = 0; i < rounds; ++i) {
      if (xproc_mutex_lock(&shared->mutex) != 0) return 1;
      const int before = shared->data;
      shared->data = before + 1;  // a non-atomic increment: only the mutex makes it exact
      if (xproc_mutex_unlock(&shared->mutex) != 0) return 2;
    }
    return 0;
  };
  const ParentAndChild both = run_in_parent_and_child(work);
  EXPECT_EQ(both.parent, 0);
  EXPECT_TRUE(both.child.ok());
  EXPECT_EQ(shared->data, 2 * rounds);
}

}  // namespace
}  // namespace xproc::test
