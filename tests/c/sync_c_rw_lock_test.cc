// xproc_rwlock_* and xproc_rwlockattr_*: kinds, busy and timed-out results, and unlock of
// either side.

#include <gtest/gtest.h>

#include <cerrno>
#include <thread>

#include "c_test_support.h"
#include "child_process.h"
#include "shared_object.h"
#include "xproc/c/sync.h"

namespace xproc::test {
namespace {

using std::chrono::milliseconds;

template <class Body>
int on_other_thread(Body body) {
  int result = -1;
  std::thread([&] { result = body(); }).join();
  return result;
}

TEST(CRwLock, AttributesRoundTripAndAcceptGlibcsKindValues) {
  xproc_rwlockattr_t attr;
  ASSERT_EQ(xproc_rwlockattr_init(&attr), 0);
  int value = -1;
  EXPECT_EQ(xproc_rwlockattr_getkind(&attr, &value), 0);
  EXPECT_EQ(value, XPROC_RWLOCK_DEFAULT);
  EXPECT_EQ(xproc_rwlockattr_getpshared(&attr, &value), 0);
  EXPECT_EQ(value, XPROC_PROCESS_PRIVATE);
  for (int kind : {XPROC_RWLOCK_PREFER_READER, XPROC_RWLOCK_PREFER_WRITER,
                   XPROC_RWLOCK_PREFER_WRITER_NONRECURSIVE, XPROC_RWLOCK_PHASE_FAIR}) {
    EXPECT_EQ(xproc_rwlockattr_setkind(&attr, kind), 0);
    EXPECT_EQ(xproc_rwlockattr_getkind(&attr, &value), 0);
    EXPECT_EQ(value, kind);
  }
  EXPECT_EQ(xproc_rwlockattr_setkind(&attr, 3), EINVAL);
  EXPECT_EQ(xproc_rwlockattr_setpshared(&attr, XPROC_PROCESS_SHARED), 0);
  EXPECT_EQ(xproc_rwlockattr_getpshared(&attr, &value), 0);
  EXPECT_EQ(value, XPROC_PROCESS_SHARED);
  EXPECT_EQ(xproc_rwlockattr_setpshared(&attr, -1), EINVAL);
  EXPECT_EQ(xproc_rwlockattr_destroy(&attr), 0);
  EXPECT_EQ(xproc_rwlockattr_getkind(&attr, &value), EINVAL);
}

TEST(CRwLock, StaticInitializerGivesAWorkingLock) {
  xproc_rwlock_t rwlock = XPROC_RWLOCK_INITIALIZER;
  EXPECT_EQ(xproc_rwlock_rdlock(&rwlock), 0);
  EXPECT_EQ(on_other_thread([&] { return xproc_rwlock_trywrlock(&rwlock); }), EBUSY);
  EXPECT_EQ(xproc_rwlock_unlock(&rwlock), 0);
  EXPECT_EQ(xproc_rwlock_wrlock(&rwlock), 0);
  EXPECT_EQ(on_other_thread([&] { return xproc_rwlock_tryrdlock(&rwlock); }), EBUSY);
  EXPECT_EQ(xproc_rwlock_unlock(&rwlock), 0);
  EXPECT_EQ(xproc_rwlock_destroy(&rwlock), 0);
}

TEST(CRwLock, EveryKindSharesReadersExcludesWritersAndTimesOut) {
  for (int kind : {XPROC_RWLOCK_PREFER_READER, XPROC_RWLOCK_PREFER_WRITER,
                   XPROC_RWLOCK_PREFER_WRITER_NONRECURSIVE, XPROC_RWLOCK_PHASE_FAIR}) {
    SCOPED_TRACE(testing::Message() << "kind " << kind);
    xproc_rwlockattr_t attr;
    ASSERT_EQ(xproc_rwlockattr_init(&attr), 0);
    ASSERT_EQ(xproc_rwlockattr_setkind(&attr, kind), 0);
    xproc_rwlock_t rwlock;
    ASSERT_EQ(xproc_rwlock_init(&rwlock, &attr), 0);
    EXPECT_EQ(xproc_rwlockattr_destroy(&attr), 0);

    const timespec past = monotonic_in(milliseconds(-1));
    const timespec soon = monotonic_in(milliseconds(10));
    const timespec bad = bad_timespec();
    ASSERT_EQ(xproc_rwlock_timedrdlock(&rwlock, &past), 0);  // free: no wait, no timeout
    EXPECT_EQ(xproc_rwlock_rdlock(&rwlock), 0);              // recursive read hold
    EXPECT_EQ(on_other_thread([&] {
                const int code = xproc_rwlock_tryrdlock(&rwlock);
                return code != 0 ? code : xproc_rwlock_unlock(&rwlock);
              }),
              0);
    EXPECT_EQ(xproc_rwlock_destroy(&rwlock), EBUSY);
    EXPECT_EQ(on_other_thread([&] { return xproc_rwlock_timedwrlock(&rwlock, &soon); }), ETIMEDOUT);
    EXPECT_EQ(on_other_thread([&] { return xproc_rwlock_timedwrlock(&rwlock, &bad); }), EINVAL);
    EXPECT_EQ(xproc_rwlock_unlock(&rwlock), 0);
    EXPECT_EQ(xproc_rwlock_unlock(&rwlock), 0);

    ASSERT_EQ(xproc_rwlock_timedwrlock(&rwlock, &past), 0);
    EXPECT_EQ(on_other_thread([&] { return xproc_rwlock_timedrdlock(&rwlock, &past); }), ETIMEDOUT);
    EXPECT_EQ(on_other_thread([&] { return xproc_rwlock_timedrdlock(&rwlock, &bad); }), EINVAL);
    EXPECT_EQ(on_other_thread([&] { return xproc_rwlock_trywrlock(&rwlock); }), EBUSY);
    EXPECT_EQ(xproc_rwlock_unlock(&rwlock), 0);
    EXPECT_EQ(xproc_rwlock_unlock(&rwlock), EPERM);  // holds nothing now
    EXPECT_EQ(xproc_rwlock_destroy(&rwlock), 0);
  }
}

TEST(CRwLock, UpgradingAReadHoldIsDeadlockNotAHang) {
  xproc_rwlock_t rwlock = XPROC_RWLOCK_INITIALIZER;
  ASSERT_EQ(xproc_rwlock_rdlock(&rwlock), 0);
  EXPECT_EQ(xproc_rwlock_wrlock(&rwlock), EDEADLK);
  const timespec soon = monotonic_in(milliseconds(10));
  EXPECT_EQ(xproc_rwlock_timedwrlock(&rwlock, &soon), EDEADLK);
  EXPECT_EQ(xproc_rwlock_unlock(&rwlock), 0);
  EXPECT_EQ(xproc_rwlock_wrlock(&rwlock), 0);
  EXPECT_EQ(xproc_rwlock_unlock(&rwlock), 0);
}

struct SharedRwLock {
  xproc_rwlock_t rwlock;
  long data;
};

TEST(CRwLock, ProcessSharedWritersExcludeEachOtherAcrossProcesses) {
  SharedObject<SharedRwLock> shared;
  xproc_rwlockattr_t attr;
  ASSERT_EQ(xproc_rwlockattr_init(&attr), 0);
  ASSERT_EQ(xproc_rwlockattr_setpshared(&attr, XPROC_PROCESS_SHARED), 0);
  ASSERT_EQ(xproc_rwlock_init(&shared->rwlock, &attr), 0);
  const long rounds = scaled(2000);
  auto work = [&] {
    for (long i = 0; i < rounds; ++i) {
      if (xproc_rwlock_wrlock(&shared->rwlock) != 0) return 1;
      const long before = shared->data;
      shared->data = before + 1;
      if (xproc_rwlock_unlock(&shared->rwlock) != 0) return 2;
      if (xproc_rwlock_rdlock(&shared->rwlock) != 0) return 3;
      if (shared->data < before + 1) return 4;
      if (xproc_rwlock_unlock(&shared->rwlock) != 0) return 5;
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
