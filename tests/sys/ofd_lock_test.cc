#include "xproc/sys/ofd_lock.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include "child_process.h"
#include "xproc/sys/error.h"
#include "xproc/sys/file.h"

namespace xproc::sys {
namespace {

TEST(OfdLock, AnotherDescriptionSeesTheLockAndCannotTakeIt) {
  auto file = create_memory_file("ofd-test", 4096).value();
  auto other = reopen(file.get()).value();
  ASSERT_FALSE(ofd_try_lock(file.get(), 10, 1));
  EXPECT_TRUE(ofd_locked_by_other(other.get(), 10, 1).value());
  EXPECT_FALSE(ofd_locked_by_other(other.get(), 11, 1).value());
  EXPECT_EQ(ofd_try_lock(other.get(), 10, 1), errc::would_block);
  // The holder's own description never reports its own lock.
  EXPECT_FALSE(ofd_locked_by_other(file.get(), 10, 1).value());
  ASSERT_FALSE(ofd_unlock(file.get(), 10, 1));
  EXPECT_FALSE(ofd_locked_by_other(other.get(), 10, 1).value());
}

TEST(OfdLock, RejectsEmptyAndNegativeRanges) {
  auto file = create_memory_file("ofd-test", 4096).value();
  EXPECT_EQ(ofd_try_lock(file.get(), -1, 1), errc::invalid_argument);
  EXPECT_EQ(ofd_try_lock(file.get(), 0, 0), errc::invalid_argument);
  EXPECT_EQ(ofd_locked_by_other(file.get(), 0, 0).error(), errc::invalid_argument);
}

TEST(OfdLock, TheKernelReleasesTheLockOfAKilledProcessBeforeItIsReaped) {
  auto file = create_memory_file("ofd-test", 4096).value();
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  auto child = test::Child::start([&] {
    auto own = reopen(file.get());  // a description of its own, not the inherited one
    if (!own || ofd_try_lock(own->get(), 3, 1)) return 1;
    char byte = 1;
    if (write(ready[1], &byte, 1) != 1) return 2;
    pause();
    return 0;
  });
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  EXPECT_TRUE(ofd_locked_by_other(file.get(), 3, 1).value());
  child.kill(SIGKILL);
  // Without reaping, the child is a zombie; its descriptors are closed at exit, so the lock
  // is gone. Poll briefly: exit processing finishes asynchronously to kill().
  bool released = false;
  for (int i = 0; i < 10000 && !released; ++i) {
    released = !ofd_locked_by_other(file.get(), 3, 1).value();
    if (!released) usleep(100);
  }
  EXPECT_TRUE(released);
  EXPECT_TRUE(child.wait().signaled);
  close(ready[0]);
  close(ready[1]);
}

}  // namespace
}  // namespace xproc::sys
