// xproc_sem_*: sem_* return conventions (-1 and errno), post_multiple, and named semaphores
// shared by two processes.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>

#include "c_test_support.h"
#include "child_process.h"
#include "shared_object.h"
#include "xproc/c/sync.h"

namespace xproc::test {
namespace {

using std::chrono::milliseconds;

// A name no other test run uses.
std::string unique_name(const char* what) {
  static int counter = 0;
  return "/h7-test-" + std::string(what) + "-" + std::to_string(getpid()) + "-" +
         std::to_string(++counter);
}

// The file behind a named semaphore, for tests that tamper with it.
std::string file_of(const std::string& name) {
  return "/dev/shm/xproc-sem." + name.substr(1);
}

TEST(CSemaphore, CountsDownAndTrywaitAtZeroIsAgain) {
  xproc_sem_t sem;
  ASSERT_EQ(xproc_sem_init(&sem, 0, 2), 0);
  int value = -1;
  EXPECT_EQ(xproc_sem_getvalue(&sem, &value), 0);
  EXPECT_EQ(value, 2);
  EXPECT_EQ(xproc_sem_wait(&sem), 0);
  EXPECT_EQ(xproc_sem_trywait(&sem), 0);
  errno = 0;
  EXPECT_EQ(xproc_sem_trywait(&sem), -1);
  EXPECT_EQ(errno, EAGAIN);
  EXPECT_EQ(xproc_sem_post(&sem), 0);
  EXPECT_EQ(xproc_sem_getvalue(&sem, &value), 0);
  EXPECT_EQ(value, 1);
  EXPECT_EQ(xproc_sem_destroy(&sem), 0);
}

TEST(CSemaphore, InitRefusesAValueAboveTheMaximum) {
  xproc_sem_t sem;
  errno = 0;
  EXPECT_EQ(xproc_sem_init(&sem, 0, static_cast<unsigned>(XPROC_SEM_VALUE_MAX) + 1u), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(xproc_sem_init(&sem, 1, XPROC_SEM_VALUE_MAX), 0);
  errno = 0;
  EXPECT_EQ(xproc_sem_post(&sem), -1);
  EXPECT_EQ(errno, EOVERFLOW);
  EXPECT_EQ(xproc_sem_destroy(&sem), 0);
}

TEST(CSemaphore, TimedwaitTimesOutAndRefusesABadTimespec) {
  xproc_sem_t sem;
  ASSERT_EQ(xproc_sem_init(&sem, 0, 0), 0);
  const timespec past = monotonic_in(milliseconds(-1));
  const timespec soon = monotonic_in(milliseconds(10));
  const timespec bad = bad_timespec();
  errno = 0;
  EXPECT_EQ(xproc_sem_timedwait(&sem, &past), -1);
  EXPECT_EQ(errno, ETIMEDOUT);
  errno = 0;
  EXPECT_EQ(xproc_sem_timedwait(&sem, &soon), -1);
  EXPECT_EQ(errno, ETIMEDOUT);
  errno = 0;
  EXPECT_EQ(xproc_sem_timedwait(&sem, &bad), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(xproc_sem_post(&sem), 0);
  EXPECT_EQ(xproc_sem_timedwait(&sem, &past), 0);  // available: no wait, no timeout
  EXPECT_EQ(xproc_sem_destroy(&sem), 0);
}

TEST(CSemaphore, PostMultipleReleasesThatManyUnitsAndWakesWaiters) {
  xproc_sem_t sem;
  ASSERT_EQ(xproc_sem_init(&sem, 0, 0), 0);
  std::thread first([&] { EXPECT_EQ(xproc_sem_wait(&sem), 0); });
  std::thread second([&] { EXPECT_EQ(xproc_sem_wait(&sem), 0); });
  EXPECT_EQ(xproc_sem_post_multiple(&sem, 3), 0);
  first.join();
  second.join();
  int value = -1;
  EXPECT_EQ(xproc_sem_getvalue(&sem, &value), 0);
  EXPECT_EQ(value, 1);
  EXPECT_EQ(xproc_sem_post_multiple(&sem, 0), 0);
  errno = 0;
  EXPECT_EQ(xproc_sem_post_multiple(&sem, static_cast<unsigned>(XPROC_SEM_VALUE_MAX)), -1);
  EXPECT_EQ(errno, EOVERFLOW);
  EXPECT_EQ(xproc_sem_getvalue(&sem, &value), 0);
  EXPECT_EQ(value, 1);
  EXPECT_EQ(xproc_sem_destroy(&sem), 0);
}

TEST(CSemaphore, UnnamedProcessSharedSemaphoreSignalsAnotherProcess) {
  SharedObject<xproc_sem_t> sem;
  ASSERT_EQ(xproc_sem_init(sem.get(), 1, 0), 0);
  const long rounds = scaled(200);
  auto child = Child::start([&] {
    for (long i = 0; i < rounds; ++i) {
      if (xproc_sem_post(sem.get()) != 0) return 1;
    }
    return 0;
  });
  for (long i = 0; i < rounds; ++i) ASSERT_EQ(xproc_sem_wait(sem.get()), 0);
  EXPECT_TRUE(child.wait(std::chrono::seconds(30)).ok());
  int value = -1;
  EXPECT_EQ(xproc_sem_getvalue(sem.get(), &value), 0);
  EXPECT_EQ(value, 0);
}

TEST(CSemaphore, NamedSemaphoreIsSharedByTwoProcessesAndUnlinked) {
  const std::string name = unique_name("shared");
  xproc_sem_t* sem = xproc_sem_open(name.c_str(), O_CREAT | O_EXCL, 0600, 0u);
  ASSERT_NE(sem, XPROC_SEM_FAILED) << std::strerror(errno);
  struct stat status {};
  ASSERT_EQ(stat(file_of(name).c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0777, 0600u);
  const long rounds = scaled(100);
  // The child opens the semaphore by name on its own (not through the inherited mapping).
  auto child = Child::start([&] {
    xproc_sem_t* own = xproc_sem_open(name.c_str(), 0);
    if (own == XPROC_SEM_FAILED) return 1;
    for (long i = 0; i < rounds; ++i) {
      if (xproc_sem_post(own) != 0) return 2;
    }
    return xproc_sem_close(own) == 0 ? 0 : 3;
  });
  for (long i = 0; i < rounds; ++i) {
    const timespec deadline = monotonic_in(std::chrono::seconds(20));
    ASSERT_EQ(xproc_sem_timedwait(sem, &deadline), 0);
  }
  EXPECT_TRUE(child.wait(std::chrono::seconds(30)).ok());
  // A second open in this process is another mapping of the same semaphore.
  xproc_sem_t* again = xproc_sem_open(name.c_str(), O_CREAT, 0600, 5u);  // exists: value unused
  ASSERT_NE(again, XPROC_SEM_FAILED);
  EXPECT_EQ(xproc_sem_post(again), 0);
  int value = -1;
  EXPECT_EQ(xproc_sem_getvalue(sem, &value), 0);
  EXPECT_EQ(value, 1);
  EXPECT_EQ(xproc_sem_close(again), 0);
  EXPECT_EQ(xproc_sem_close(sem), 0);
  EXPECT_EQ(xproc_sem_unlink(name.c_str()), 0);
  errno = 0;
  EXPECT_EQ(xproc_sem_unlink(name.c_str()), -1);
  EXPECT_EQ(errno, ENOENT);
  errno = 0;
  EXPECT_EQ(xproc_sem_open(name.c_str(), 0), XPROC_SEM_FAILED);
  EXPECT_EQ(errno, ENOENT);
}

TEST(CSemaphore, ExclusiveCreateOfAnExistingNameIsExist) {
  const std::string name = unique_name("exclusive");
  xproc_sem_t* sem = xproc_sem_open(name.c_str(), O_CREAT | O_EXCL, 0600, 3u);
  ASSERT_NE(sem, XPROC_SEM_FAILED);
  errno = 0;
  EXPECT_EQ(xproc_sem_open(name.c_str(), O_CREAT | O_EXCL, 0600, 3u), XPROC_SEM_FAILED);
  EXPECT_EQ(errno, EEXIST);
  int value = -1;
  EXPECT_EQ(xproc_sem_getvalue(sem, &value), 0);
  EXPECT_EQ(value, 3);
  EXPECT_EQ(xproc_sem_close(sem), 0);
  EXPECT_EQ(xproc_sem_unlink(name.c_str()), 0);
}

TEST(CSemaphore, InvalidNamesAndValuesAreRefused) {
  const std::string too_long = "/" + std::string(XPROC_SEM_NAME_MAX, 'a');
  const std::pair<std::string, int> cases[] = {
      {"", EINVAL},    {"no-slash", EINVAL},     {"/", EINVAL}, {"/a/b", EINVAL}, {"/.", EINVAL},
      {"/..", EINVAL}, {too_long, ENAMETOOLONG},
  };
  for (const auto& [name, expected] : cases) {
    SCOPED_TRACE(name);
    errno = 0;
    EXPECT_EQ(xproc_sem_open(name.c_str(), O_CREAT, 0600, 0u), XPROC_SEM_FAILED);
    EXPECT_EQ(errno, expected);
    errno = 0;
    EXPECT_EQ(xproc_sem_unlink(name.c_str()), -1);
    EXPECT_EQ(errno, expected);
  }
  errno = 0;
  EXPECT_EQ(xproc_sem_open(nullptr, 0), XPROC_SEM_FAILED);
  EXPECT_EQ(errno, EINVAL);
  const std::string name = unique_name("value");
  errno = 0;
  EXPECT_EQ(
      xproc_sem_open(name.c_str(), O_CREAT, 0600, static_cast<unsigned>(XPROC_SEM_VALUE_MAX) + 1u),
      XPROC_SEM_FAILED);
  EXPECT_EQ(errno, EINVAL);
  // Closing something xproc_sem_open did not return is refused, not unmapped.
  xproc_sem_t unnamed;
  errno = 0;
  EXPECT_EQ(xproc_sem_close(&unnamed), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(CSemaphore, CloseRefusesWhatOpenDidNotReturnEvenAtAMappingLikeAddress) {
  // An unnamed semaphore placed exactly where a named one sits in its mapping (the file header's
  // size past a page boundary): close must refuse it and leave the page mapped. (An earlier
  // close guessed from the address and unmapped such a page: a stack page, one run in 256.)
  alignas(4096) static unsigned char page[2 * 4096];
  auto* sem = reinterpret_cast<xproc_sem_t*>(page + 16);
  ASSERT_EQ(xproc_sem_init(sem, 0, 1), 0);
  errno = 0;
  EXPECT_EQ(xproc_sem_close(sem), -1);
  EXPECT_EQ(errno, EINVAL);
  page[0] = 1;  // still mapped
  EXPECT_EQ(xproc_sem_destroy(sem), 0);
  // A second close of an opened semaphore is refused too.
  const std::string name = unique_name("close-twice");
  xproc_sem_t* named = xproc_sem_open(name.c_str(), O_CREAT | O_EXCL, 0600, 0u);
  ASSERT_NE(named, XPROC_SEM_FAILED);
  EXPECT_EQ(xproc_sem_close(named), 0);
  errno = 0;
  EXPECT_EQ(xproc_sem_close(named), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(xproc_sem_unlink(name.c_str()), 0);
}

TEST(CSemaphore, AForeignOrWrongSizedFileIsInvalid) {
  const std::string name = unique_name("foreign");
  const std::string path = file_of(name);
  // Right size, wrong contents.
  int fd = open(path.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 48), 0);
  errno = 0;
  EXPECT_EQ(xproc_sem_open(name.c_str(), 0), XPROC_SEM_FAILED);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(xproc_sem_open(name.c_str(), O_CREAT, 0600, 1u), XPROC_SEM_FAILED);
  EXPECT_EQ(errno, EINVAL);
  // Wrong size: empty, and larger than a semaphore file.
  for (off_t size : {0, 4096}) {
    ASSERT_EQ(ftruncate(fd, size), 0);
    errno = 0;
    EXPECT_EQ(xproc_sem_open(name.c_str(), 0), XPROC_SEM_FAILED);
    EXPECT_EQ(errno, EINVAL);
  }
  close(fd);
  EXPECT_EQ(xproc_sem_unlink(name.c_str()), 0);
  // A genuine semaphore file truncated afterwards is refused too.
  xproc_sem_t* sem = xproc_sem_open(name.c_str(), O_CREAT | O_EXCL, 0600, 0u);
  ASSERT_NE(sem, XPROC_SEM_FAILED);
  EXPECT_EQ(xproc_sem_close(sem), 0);
  ASSERT_EQ(truncate(path.c_str(), 16), 0);
  errno = 0;
  EXPECT_EQ(xproc_sem_open(name.c_str(), 0), XPROC_SEM_FAILED);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(xproc_sem_unlink(name.c_str()), 0);
}

TEST(CSemaphore, ConcurrentOpenOrCreateYieldsOneSemaphore) {
  const std::string name = unique_name("race");
  auto open_and_post = [&] {
    xproc_sem_t* sem = xproc_sem_open(name.c_str(), O_CREAT, 0600, 0u);
    if (sem == XPROC_SEM_FAILED) return 1;
    if (xproc_sem_post(sem) != 0) return 2;
    return xproc_sem_close(sem) == 0 ? 0 : 3;
  };
  auto child = Child::start(open_and_post);
  EXPECT_EQ(open_and_post(), 0);
  EXPECT_TRUE(child.wait(std::chrono::seconds(30)).ok());
  xproc_sem_t* sem = xproc_sem_open(name.c_str(), 0);
  ASSERT_NE(sem, XPROC_SEM_FAILED);
  int value = -1;
  EXPECT_EQ(xproc_sem_getvalue(sem, &value), 0);
  EXPECT_EQ(value, 2);  // both posts landed on the same semaphore
  EXPECT_EQ(xproc_sem_close(sem), 0);
  EXPECT_EQ(xproc_sem_unlink(name.c_str()), 0);
}

}  // namespace
}  // namespace xproc::test
