// xproc_spin_*: exclusion between threads and processes, EBUSY from trylock.

#include <gtest/gtest.h>

#include <cerrno>
#include <thread>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/c/sync.h"

namespace xproc::test {
namespace {

TEST(CSpinlock, TrylockOfAHeldLockIsBusy) {
  xproc_spinlock_t lock;
  ASSERT_EQ(xproc_spin_init(&lock, XPROC_PROCESS_PRIVATE), 0);
  EXPECT_EQ(xproc_spin_lock(&lock), 0);
  int result = -1;
  std::thread([&] { result = xproc_spin_trylock(&lock); }).join();
  EXPECT_EQ(result, EBUSY);
  EXPECT_EQ(xproc_spin_destroy(&lock), EBUSY);
  EXPECT_EQ(xproc_spin_unlock(&lock), 0);
  EXPECT_EQ(xproc_spin_trylock(&lock), 0);
  EXPECT_EQ(xproc_spin_unlock(&lock), 0);
  EXPECT_EQ(xproc_spin_destroy(&lock), 0);
  EXPECT_EQ(xproc_spin_init(&lock, 5), EINVAL);
}

struct SharedSpinlock {
  xproc_spinlock_t lock;
  long data;
};

TEST(CSpinlock, ProcessSharedSpinlockExcludesAcrossProcesses) {
  SharedObject<SharedSpinlock> shared;
  ASSERT_EQ(xproc_spin_init(&shared->lock, XPROC_PROCESS_SHARED), 0);
  const long rounds = scaled(5000);
  auto work = [&] {
    for (long i = 0; i < rounds; ++i) {
      if (xproc_spin_lock(&shared->lock) != 0) return 1;
      const long before = shared->data;
      shared->data = before + 1;
      if (xproc_spin_unlock(&shared->lock) != 0) return 2;
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
