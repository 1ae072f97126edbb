// Scenarios of glibc's semaphore tests (tst-sem1..10, 14, 15), ported to xproc's C API:
// sem_*'s conventions (0, or -1 with errno), ABSOLUTE CLOCK_MONOTONIC deadlines.

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "nptl_test_support.h"
#include "shared_object.h"
#include "xproc/c/sync.h"

namespace xproc::test {
namespace {

using std::chrono::milliseconds;

// The errno of a call that must fail with -1 (0 when it did not fail).
template <class Call>
int failure_errno(Call call) {
  errno = 0;
  return call() == -1 ? errno : 0;
}

// A name no other run or test uses: /xproc-nptl-<what>-<pid>.
std::string unique_name(const char* what) {
  return std::string("/xproc-nptl-") + what + "-" + std::to_string(getpid());
}

// tst-sem1: value 1: wait, post, trywait succeed; a second trywait is EAGAIN; post, wait.
TEST(NptlSem, InitWaitPostTrywaitSequence) {
  xproc_sem_t sem;
  ASSERT_EQ(xproc_sem_init(&sem, 0, 1), 0);
  EXPECT_EQ(xproc_sem_wait(&sem), 0);
  EXPECT_EQ(xproc_sem_post(&sem), 0);
  EXPECT_EQ(xproc_sem_trywait(&sem), 0);
  EXPECT_EQ(failure_errno([&] { return xproc_sem_trywait(&sem); }), EAGAIN);
  EXPECT_EQ(xproc_sem_post(&sem), 0);
  EXPECT_EQ(xproc_sem_wait(&sem), 0);
  int value = -1;
  EXPECT_EQ(xproc_sem_getvalue(&sem, &value), 0);
  EXPECT_EQ(value, 0);
  EXPECT_EQ(xproc_sem_destroy(&sem), 0);
}

// tst-sem2: wait on a zero semaphore does not return without a post (glibc: an alarm ends the
// test); here: a timed wait times out, and a blocked waiter returns only after the post.
TEST(NptlSem, WaitOnZeroReturnsOnlyAfterAPost) {
  xproc_sem_t sem;
  ASSERT_EQ(xproc_sem_init(&sem, 0, 0), 0);
  const timespec soon = monotonic_in(milliseconds(20));
  EXPECT_EQ(failure_errno([&] { return xproc_sem_timedwait(&sem, &soon); }), ETIMEDOUT);
  std::atomic<int> stage{0};
  int code = -1;
  std::thread waiter([&] {
    announce(stage, 1);
    code = xproc_sem_wait(&sem);
    announce(stage, 2);
  });
  ASSERT_TRUE(await_at_least(stage, 1));
  std::this_thread::sleep_for(milliseconds(20));  // a chance to return wrongly, if it could
  EXPECT_EQ(stage.load(), 1);
  EXPECT_EQ(xproc_sem_post(&sem), 0);
  waiter.join();
  EXPECT_EQ(code, 0);
  int value = -1;
  EXPECT_EQ(xproc_sem_getvalue(&sem, &value), 0);
  EXPECT_EQ(value, 0);
  EXPECT_EQ(xproc_sem_destroy(&sem), 0);
}

// tst-sem3: a process-shared semaphore in a MAP_SHARED file, used as a lock that parent and
// forked child pass back and forth (two semaphores make the turns strict).
struct SemPair {
  xproc_sem_t parent_turn;
  xproc_sem_t child_turn;
  long counter = 0;
};

TEST(NptlSem, ProcessSharedSemaphoresInAMappedFilePingPongAcrossFork) {
  char path[] = "/tmp/xproc-nptl-sem.XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(unlink(path), 0);
  ASSERT_EQ(ftruncate(fd, sizeof(SemPair)), 0);
  void* memory = mmap(nullptr, sizeof(SemPair), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(memory, MAP_FAILED);
  close(fd);
  auto* pair = new (memory) SemPair;
  ASSERT_EQ(xproc_sem_init(&pair->parent_turn, 1, 1), 0);
  ASSERT_EQ(xproc_sem_init(&pair->child_turn, 1, 0), 0);
  // As glibc's test: take the unit, and a second trywait must fail.
  ASSERT_EQ(xproc_sem_wait(&pair->parent_turn), 0);
  EXPECT_EQ(failure_errno([&] { return xproc_sem_trywait(&pair->parent_turn); }), EAGAIN);
  ASSERT_EQ(xproc_sem_post(&pair->parent_turn), 0);
  const long rounds = scaled(500);
  auto child = Child::start([&] {
    for (long i = 0; i < rounds; ++i) {
      if (xproc_sem_wait(&pair->child_turn) != 0) return 1;
      if (pair->counter != 2 * i + 1) return 2;
      ++pair->counter;
      if (xproc_sem_post(&pair->parent_turn) != 0) return 3;
    }
    return 0;
  });
  for (long i = 0; i < rounds; ++i) {
    const timespec deadline = monotonic_in(kHandshakeTimeout);
    ASSERT_EQ(xproc_sem_timedwait(&pair->parent_turn, &deadline), 0);
    ASSERT_EQ(pair->counter, 2 * i);
    ++pair->counter;
    ASSERT_EQ(xproc_sem_post(&pair->child_turn), 0);
  }
  const ChildStatus status = child.wait(kHandshakeTimeout);
  EXPECT_TRUE(status.ok()) << "child exit code " << status.exit_code;
  EXPECT_EQ(xproc_sem_wait(&pair->parent_turn), 0);
  EXPECT_EQ(pair->counter, 2 * rounds);
  EXPECT_EQ(xproc_sem_destroy(&pair->parent_turn), 0);
  EXPECT_EQ(xproc_sem_destroy(&pair->child_turn), 0);
  pair->~SemPair();
  EXPECT_EQ(munmap(memory, sizeof(SemPair)), 0);
}

// tst-sem4: O_CREAT creates; O_CREAT|O_EXCL on an existing name is EEXIST; after unlink, an
// open without O_CREAT is ENOENT; the handle opened before the unlink keeps working.
TEST(NptlSem, NamedCreateExclusiveUnlinkAndReopen) {
  const std::string name = unique_name("sem4");
  xproc_sem_unlink(name.c_str());  // a clean slate; failure (ENOENT) is fine
  xproc_sem_t* sem = xproc_sem_open(name.c_str(), O_CREAT, static_cast<mode_t>(0600), 1u);
  ASSERT_NE(sem, XPROC_SEM_FAILED) << "errno " << errno;
  errno = 0;
  EXPECT_EQ(xproc_sem_open(name.c_str(), O_CREAT | O_EXCL, static_cast<mode_t>(0600), 1u),
            XPROC_SEM_FAILED);
  EXPECT_EQ(errno, EEXIST);
  EXPECT_EQ(xproc_sem_unlink(name.c_str()), 0);
  errno = 0;
  EXPECT_EQ(xproc_sem_open(name.c_str(), 0), XPROC_SEM_FAILED);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(failure_errno([&] { return xproc_sem_unlink(name.c_str()); }), ENOENT);
  EXPECT_EQ(xproc_sem_wait(sem), 0);
  EXPECT_EQ(failure_errno([&] { return xproc_sem_trywait(sem); }), EAGAIN);
  EXPECT_EQ(xproc_sem_post(sem), 0);
  EXPECT_EQ(xproc_sem_close(sem), 0);
}

// tst-sem5: a timed wait on an empty semaphore fails with ETIMEDOUT, not before the deadline.
TEST(NptlSem, TimedwaitTimesOutNoEarlierThanTheDeadline) {
  xproc_sem_t sem;
  ASSERT_EQ(xproc_sem_init(&sem, 0, 1), 0);
  ASSERT_EQ(xproc_sem_wait(&sem), 0);
  const timespec deadline = monotonic_in(milliseconds(50));
  EXPECT_EQ(failure_errno([&] { return xproc_sem_timedwait(&sem, &deadline); }), ETIMEDOUT);
  EXPECT_GE(monotonic_now(), to_duration(deadline));
  EXPECT_EQ(xproc_sem_destroy(&sem), 0);
}

// tst-sem7: the same name opened three times (O_CREAT twice, then without) is one semaphore:
// a post through one handle is seen through the others; every handle closes once.
TEST(NptlSem, NamedSemaphoreOpenedThreeTimesIsOneSemaphore) {
  const std::string name = unique_name("sem7");
  xproc_sem_unlink(name.c_str());
  xproc_sem_t* first = xproc_sem_open(name.c_str(), O_CREAT, static_cast<mode_t>(0600), 1u);
  ASSERT_NE(first, XPROC_SEM_FAILED) << "errno " << errno;
  xproc_sem_t* second = xproc_sem_open(name.c_str(), O_CREAT, static_cast<mode_t>(0600), 1u);
  ASSERT_NE(second, XPROC_SEM_FAILED) << "errno " << errno;
  xproc_sem_t* third = xproc_sem_open(name.c_str(), 0);
  ASSERT_NE(third, XPROC_SEM_FAILED) << "errno " << errno;
  int value = -1;
  EXPECT_EQ(xproc_sem_getvalue(third, &value), 0);
  EXPECT_EQ(value, 1);  // the second O_CREAT did not re-initialize it
  EXPECT_EQ(xproc_sem_wait(second), 0);
  EXPECT_EQ(failure_errno([&] { return xproc_sem_trywait(first); }), EAGAIN);
  EXPECT_EQ(xproc_sem_post(third), 0);
  EXPECT_EQ(xproc_sem_trywait(first), 0);
  EXPECT_EQ(xproc_sem_close(second), 0);
  EXPECT_EQ(xproc_sem_close(third), 0);
  EXPECT_EQ(xproc_sem_post(first), 0);  // still open through the first handle
  EXPECT_EQ(xproc_sem_close(first), 0);
  EXPECT_EQ(xproc_sem_unlink(name.c_str()), 0);
}

int open_descriptors() {
  int count = 0;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (readdir(dir) != nullptr) ++count;
    closedir(dir);
  }
  return count;
}

// tst-sem8 and tst-sem9: opening and closing a named semaphore many times (and unlinking it
// each time, tst-sem9) leaks nothing: the process ends with the descriptors it started with.
TEST(NptlSem, NamedOpenCloseManyTimesLeaksNoDescriptor) {
  const std::string name = unique_name("sem8");
  xproc_sem_unlink(name.c_str());
  const long rounds = scaled(300);
  const int before = open_descriptors();
  for (bool unlink_each : {false, true}) {
    for (long i = 0; i < rounds; ++i) {
      xproc_sem_t* sem = xproc_sem_open(name.c_str(), O_CREAT, static_cast<mode_t>(0600), 1u);
      ASSERT_NE(sem, XPROC_SEM_FAILED) << "round " << i << " errno " << errno;
      ASSERT_EQ(xproc_sem_close(sem), 0);
      if (unlink_each) {
        ASSERT_EQ(xproc_sem_unlink(name.c_str()), 0);
      }
    }
  }
  EXPECT_EQ(open_descriptors(), before);
  EXPECT_EQ(failure_errno([&] { return xproc_sem_unlink(name.c_str()); }), ENOENT);
}

// tst-sem10: on an empty semaphore a past deadline is ETIMEDOUT and a tv_nsec outside
// [0, 1e9) is EINVAL; with a unit available even a past deadline succeeds.
TEST(NptlSem, TimedwaitWithAPastDeadlineOrABadTimespec) {
  xproc_sem_t sem;
  ASSERT_EQ(xproc_sem_init(&sem, 0, 0), 0);
  const timespec yesterday = monotonic_in(-std::chrono::hours(24));
  EXPECT_EQ(failure_errno([&] { return xproc_sem_timedwait(&sem, &yesterday); }), ETIMEDOUT);
  timespec negative = monotonic_in(milliseconds(10));
  negative.tv_nsec = -1;
  const timespec too_big = bad_timespec();
  EXPECT_EQ(failure_errno([&] { return xproc_sem_timedwait(&sem, &negative); }), EINVAL);
  EXPECT_EQ(failure_errno([&] { return xproc_sem_timedwait(&sem, &too_big); }), EINVAL);
  EXPECT_EQ(xproc_sem_post(&sem), 0);
  EXPECT_EQ(xproc_sem_timedwait(&sem, &yesterday), 0);
  EXPECT_EQ(xproc_sem_destroy(&sem), 0);
}

// tst-sem14: a semaphore used as a lock by many threads (one unit passed around): a counter
// incremented under it comes out exact.
TEST(NptlSem, ThreadsPassingOneUnitAroundCountExactly) {
  constexpr int kThreads = 8;
  const long iterations = scaled(2000);
  xproc_sem_t sem;
  ASSERT_EQ(xproc_sem_init(&sem, 0, 0), 0);
  long counter = 0;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (long i = 0; i < iterations; ++i) {
        if (xproc_sem_wait(&sem) != 0) failures.fetch_add(1);
        ++counter;
        if (xproc_sem_post(&sem) != 0) failures.fetch_add(1);
      }
    });
  }
  EXPECT_EQ(xproc_sem_post(&sem), 0);  // release the one unit
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(counter, kThreads * iterations);
  int value = -1;
  EXPECT_EQ(xproc_sem_getvalue(&sem, &value), 0);
  EXPECT_EQ(value, 1);
  EXPECT_EQ(xproc_sem_destroy(&sem), 0);
}

// The same across processes: children count under a process-shared semaphore.
struct SharedSemCounter {
  xproc_sem_t sem;
  long counter = 0;
};

TEST(NptlSem, ProcessesPassingOneUnitAroundCountExactly) {
  constexpr int kChildren = 4;
  const long iterations = scaled(1000);
  SharedObject<SharedSemCounter> shared;
  ASSERT_EQ(xproc_sem_init(&shared->sem, 1, 1), 0);
  std::vector<Child> children;
  for (int c = 0; c < kChildren; ++c) {
    children.push_back(Child::start([&] {
      for (long i = 0; i < iterations; ++i) {
        if (xproc_sem_wait(&shared->sem) != 0) return 1;
        ++shared->counter;
        if (xproc_sem_post(&shared->sem) != 0) return 2;
      }
      return 0;
    }));
  }
  for (auto& child : children) EXPECT_TRUE(child.wait(kHandshakeTimeout).ok());
  EXPECT_EQ(shared->counter, kChildren * iterations);
  EXPECT_EQ(xproc_sem_destroy(&shared->sem), 0);
}

// tst-sem15: at XPROC_SEM_VALUE_MAX, post fails with EOVERFLOW and the value stays; an initial
// value above the maximum is EINVAL.
TEST(NptlSem, PostAtTheMaximumIsEoverflowAndKeepsTheValue) {
  xproc_sem_t sem;
  ASSERT_EQ(xproc_sem_init(&sem, 0, XPROC_SEM_VALUE_MAX), 0);
  int value = -1;
  EXPECT_EQ(xproc_sem_getvalue(&sem, &value), 0);
  EXPECT_EQ(value, XPROC_SEM_VALUE_MAX);
  EXPECT_EQ(failure_errno([&] { return xproc_sem_post(&sem); }), EOVERFLOW);
  EXPECT_EQ(xproc_sem_getvalue(&sem, &value), 0);
  EXPECT_EQ(value, XPROC_SEM_VALUE_MAX);
  EXPECT_EQ(xproc_sem_destroy(&sem), 0);
  EXPECT_EQ(failure_errno([&] {
              return xproc_sem_init(&sem, 0, static_cast<unsigned>(XPROC_SEM_VALUE_MAX) + 1u);
            }),
            EINVAL);
}

}  // namespace
}  // namespace xproc::test
