// Scenarios of glibc's condition-variable tests (tst-cond1..27 minus cancellation and
// CLOCK_REALTIME specifics), the condvar part of tst-mutex8, and tst-robust7 (owner death seen
// through cond_wait), ported to xproc's C API. Every deadline is absolute CLOCK_MONOTONIC.
// Storms that could hang on a lost wake-up run in a forked child, so a hang is a timeout.

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <cerrno>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "child_process.h"
#include "nptl_test_support.h"
#include "shared_object.h"
#include "xproc/c/sync.h"

namespace xproc::test {
namespace {

using std::chrono::milliseconds;

int make_cond(xproc_cond_t* cond, int pshared) {
  xproc_condattr_t attr;
  if (int code = xproc_condattr_init(&attr)) return code;
  int code = xproc_condattr_setpshared(&attr, pshared);
  if (code == 0) code = xproc_cond_init(cond, &attr);
  const int destroyed = xproc_condattr_destroy(&attr);
  return code != 0 ? code : destroyed;
}

// Runs `body` in a forked child and expects exit code 0 within the handshake timeout (a hang
// becomes kChildTimedOut instead of a hung test binary).
void run_in_child(const std::function<int()>& body,
                  std::chrono::milliseconds timeout = kHandshakeTimeout) {
  auto child = Child::start(body);
  const ChildStatus status = child.wait(timeout);
  EXPECT_TRUE(status.ok()) << "exit code " << status.exit_code << " (" << kChildTimedOut
                           << " = timed out), signal " << status.term_signal;
}

// A mutex, a condvar and the state they guard, for threads or (in MAP_SHARED memory)
// processes.
struct Monitor {
  xproc_mutex_t mutex;
  xproc_cond_t cond;
  int waiting = 0;       // guarded by mutex
  int go = 0;            // guarded by mutex
  int tokens = 0;        // guarded by mutex
  int results[16] = {};  // per participant
};

void init_monitor(Monitor& monitor, int pshared, int type = XPROC_MUTEX_NORMAL,
                  int robust = XPROC_MUTEX_STALLED) {
  ASSERT_EQ(make_mutex(&monitor.mutex, type, robust, pshared), 0);
  ASSERT_EQ(make_cond(&monitor.cond, pshared), 0);
}

// tst-cond1: one waiter, one signal under the mutex, with the predicate protocol.
TEST(NptlCond, SignalWakesTheWaiter) {
  Monitor monitor;
  init_monitor(monitor, XPROC_PROCESS_PRIVATE);
  int wait_code = -1;
  std::thread waiter([&] {
    xproc_mutex_lock(&monitor.mutex);
    monitor.waiting = 1;
    while (monitor.go == 0 && wait_code <= 0)
      wait_code = xproc_cond_wait(&monitor.cond, &monitor.mutex);
    xproc_mutex_unlock(&monitor.mutex);
  });
  for (;;) {  // until the waiter is inside wait (it set `waiting` and released the mutex)
    ASSERT_EQ(xproc_mutex_lock(&monitor.mutex), 0);
    if (monitor.waiting == 1) break;
    ASSERT_EQ(xproc_mutex_unlock(&monitor.mutex), 0);
    sched_yield();
  }
  monitor.go = 1;
  EXPECT_EQ(xproc_cond_signal(&monitor.cond), 0);
  EXPECT_EQ(xproc_mutex_unlock(&monitor.mutex), 0);
  waiter.join();
  EXPECT_EQ(wait_code, 0);
  EXPECT_EQ(xproc_cond_destroy(&monitor.cond), 0);
  EXPECT_EQ(xproc_mutex_destroy(&monitor.mutex), 0);
}

// Waits (mutex held on return) until `count` participants have set themselves waiting; then
// they are all inside cond_wait, since each sets it and waits under the same mutex hold.
bool lock_when_waiting(Monitor& monitor, int count) {
  const auto deadline = monotonic_now() + kHandshakeTimeout;
  for (;;) {
    if (xproc_mutex_lock(&monitor.mutex) != 0) return false;
    if (monitor.waiting >= count) return true;
    xproc_mutex_unlock(&monitor.mutex);
    if (monotonic_now() > deadline) return false;
    sched_yield();
  }
}

// tst-cond2 and tst-cond10: rounds of N waiters; a broadcast (even rounds) or N signals (odd
// rounds) wakes every one of them, each consuming one token.
TEST(NptlCond, BroadcastOrOneSignalPerWaiterWakesThemAll) {
  constexpr int kWaiters = 6;
  const long rounds = scaled(40);
  for (long round = 0; round < rounds; ++round) {
    SCOPED_TRACE(testing::Message() << "round " << round);
    Monitor monitor;
    init_monitor(monitor, XPROC_PROCESS_PRIVATE);
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kWaiters; ++t) {
      threads.emplace_back([&] {
        if (xproc_mutex_lock(&monitor.mutex) != 0) failures.fetch_add(1);
        ++monitor.waiting;
        while (monitor.tokens == 0) {
          if (xproc_cond_wait(&monitor.cond, &monitor.mutex) != 0) failures.fetch_add(1);
        }
        --monitor.tokens;
        if (xproc_mutex_unlock(&monitor.mutex) != 0) failures.fetch_add(1);
      });
    }
    ASSERT_TRUE(lock_when_waiting(monitor, kWaiters));
    monitor.tokens = kWaiters;
    if (round % 2 == 0) {
      EXPECT_EQ(xproc_cond_broadcast(&monitor.cond), 0);
    } else {
      for (int i = 0; i < kWaiters; ++i) EXPECT_EQ(xproc_cond_signal(&monitor.cond), 0);
    }
    EXPECT_EQ(xproc_mutex_unlock(&monitor.mutex), 0);
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(failures.load(), 0);
    EXPECT_EQ(monitor.tokens, 0);
  }
}

// tst-cond3 (more than POSIX demands, as glibc notes): waiters that nobody signals stay asleep
// while more waiters arrive; none returns from wait before the final broadcast.
TEST(NptlCond, WaitersStayAsleepWhileOnlyMoreWaitersArrive) {
  constexpr int kWaiters = 8;
  Monitor monitor;
  init_monitor(monitor, XPROC_PROCESS_PRIVATE);
  std::atomic<int> early_returns{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kWaiters; ++t) {
    threads.emplace_back([&] {
      xproc_mutex_lock(&monitor.mutex);
      ++monitor.waiting;
      while (monitor.go == 0) {
        xproc_cond_wait(&monitor.cond, &monitor.mutex);
        if (monitor.go == 0) early_returns.fetch_add(1);
      }
      xproc_mutex_unlock(&monitor.mutex);
    });
    // The next waiter starts only when this one is inside wait.
    ASSERT_TRUE(lock_when_waiting(monitor, t + 1));
    ASSERT_EQ(xproc_mutex_unlock(&monitor.mutex), 0);
  }
  std::this_thread::sleep_for(milliseconds(20));  // time for a wrongful wake-up to show
  ASSERT_EQ(xproc_mutex_lock(&monitor.mutex), 0);
  monitor.go = 1;
  EXPECT_EQ(xproc_cond_broadcast(&monitor.cond), 0);
  EXPECT_EQ(xproc_mutex_unlock(&monitor.mutex), 0);
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(early_returns.load(), 0);
}

// tst-cond4 and tst-cond12: a process-shared mutex and condvar (in anonymous shared memory,
// and in a MAP_SHARED file) hand a value back and forth between parent and forked child.
void ping_pong(Monitor& monitor) {
  const long rounds = scaled(200);
  auto child = Child::start([&] {
    for (long i = 0; i < rounds; ++i) {
      if (xproc_mutex_lock(&monitor.mutex) != 0) return 1;
      while (monitor.tokens % 2 == 0) {  // parent's turn
        if (xproc_cond_wait(&monitor.cond, &monitor.mutex) != 0) return 2;
      }
      ++monitor.tokens;
      if (xproc_cond_signal(&monitor.cond) != 0) return 3;
      if (xproc_mutex_unlock(&monitor.mutex) != 0) return 4;
    }
    return 0;
  });
  for (long i = 0; i < rounds; ++i) {
    ASSERT_EQ(xproc_mutex_lock(&monitor.mutex), 0);
    while (monitor.tokens % 2 == 1) {  // child's turn
      const timespec deadline = monotonic_in(kHandshakeTimeout);
      ASSERT_EQ(xproc_cond_timedwait(&monitor.cond, &monitor.mutex, &deadline), 0);
    }
    ++monitor.tokens;
    EXPECT_EQ(xproc_cond_signal(&monitor.cond), 0);
    ASSERT_EQ(xproc_mutex_unlock(&monitor.mutex), 0);
  }
  const ChildStatus status = child.wait(kHandshakeTimeout);
  EXPECT_TRUE(status.ok()) << "child exit code " << status.exit_code;
  EXPECT_EQ(monitor.tokens, 2 * rounds);
}

TEST(NptlCond, ProcessSharedCondvarInAnonymousMemoryPingPongsWithAForkedChild) {
  SharedObject<Monitor> monitor;
  init_monitor(*monitor, XPROC_PROCESS_SHARED);
  xproc_condattr_t attr;
  ASSERT_EQ(xproc_condattr_init(&attr), 0);
  int pshared = -1;
  EXPECT_EQ(xproc_condattr_getpshared(&attr, &pshared), 0);
  EXPECT_EQ(pshared, XPROC_PROCESS_PRIVATE);
  EXPECT_EQ(xproc_condattr_setpshared(&attr, XPROC_PROCESS_SHARED), 0);
  EXPECT_EQ(xproc_condattr_getpshared(&attr, &pshared), 0);
  EXPECT_EQ(pshared, XPROC_PROCESS_SHARED);
  EXPECT_EQ(xproc_condattr_destroy(&attr), 0);
  ping_pong(*monitor);
}

TEST(NptlCond, ProcessSharedCondvarInAMappedFilePingPongsWithAForkedChild) {
  char path[] = "/tmp/xproc-nptl-cond.XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(unlink(path), 0);
  ASSERT_EQ(ftruncate(fd, sizeof(Monitor)), 0);
  void* memory = mmap(nullptr, sizeof(Monitor), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(memory, MAP_FAILED);
  close(fd);
  auto* monitor = new (memory) Monitor;
  init_monitor(*monitor, XPROC_PROCESS_SHARED);
  ping_pong(*monitor);
  monitor->~Monitor();
  EXPECT_EQ(munmap(memory, sizeof(Monitor)), 0);
}

// tst-cond5: timedwait with nobody signalling returns ETIMEDOUT, not before the deadline, and
// with the mutex held again (another thread's trylock is EBUSY).
TEST(NptlCond, TimedwaitTimesOutNoEarlierThanTheDeadlineWithTheMutexHeld) {
  for (int type : {XPROC_MUTEX_NORMAL, XPROC_MUTEX_ERRORCHECK, XPROC_MUTEX_RECURSIVE}) {
    SCOPED_TRACE(testing::Message() << "type " << type);
    Monitor monitor;
    init_monitor(monitor, XPROC_PROCESS_PRIVATE, type);
    ASSERT_EQ(xproc_mutex_lock(&monitor.mutex), 0);
    const timespec deadline = monotonic_in(milliseconds(40));
    int code = 0;
    do {
      code = xproc_cond_timedwait(&monitor.cond, &monitor.mutex, &deadline);
    } while (code == 0);  // a spurious return is allowed: wait again for the same deadline
    EXPECT_EQ(code, ETIMEDOUT);
    EXPECT_GE(monotonic_now(), to_duration(deadline));
    int other = -1;
    std::thread([&] { other = xproc_mutex_trylock(&monitor.mutex); }).join();
    EXPECT_EQ(other, EBUSY);
    EXPECT_EQ(xproc_mutex_unlock(&monitor.mutex), 0);
  }
}

// tst-cond6: across fork, a timed waiter that is signalled before its deadline returns 0, and
// one that is not returns ETIMEDOUT holding the process-shared mutex.
TEST(NptlCond, ProcessSharedTimedwaitIsSignalledOrTimesOutAcrossFork) {
  SharedObject<Monitor> monitor;
  init_monitor(*monitor, XPROC_PROCESS_SHARED);
  auto child = Child::start([&] {
    if (xproc_mutex_lock(&monitor->mutex) != 0) return 1;
    monitor->waiting = 1;
    const timespec far = monotonic_in(kHandshakeTimeout);
    while (monitor->go == 0) {
      if (xproc_cond_timedwait(&monitor->cond, &monitor->mutex, &far) != 0) return 2;
    }
    // Nobody signals this time.
    const timespec near = monotonic_in(milliseconds(30));
    int code = 0;
    while (code == 0) code = xproc_cond_timedwait(&monitor->cond, &monitor->mutex, &near);
    if (code != ETIMEDOUT) return 3;
    monitor->results[0] = 1;  // written while holding the mutex again
    return xproc_mutex_unlock(&monitor->mutex) == 0 ? 0 : 4;
  });
  ASSERT_TRUE(lock_when_waiting(*monitor, 1));
  monitor->go = 1;
  EXPECT_EQ(xproc_cond_signal(&monitor->cond), 0);
  EXPECT_EQ(xproc_mutex_unlock(&monitor->mutex), 0);
  const ChildStatus status = child.wait(kHandshakeTimeout);
  EXPECT_TRUE(status.ok()) << "child exit code " << status.exit_code;
  EXPECT_EQ(monitor->results[0], 1);
}

// tst-cond9: waiting with an error-checking mutex the caller does not hold is EPERM, for wait
// and timedwait, whether nobody or another thread holds it.
TEST(NptlCond, WaitWithoutHoldingAnErrorCheckingMutexIsEperm) {
  Monitor monitor;
  init_monitor(monitor, XPROC_PROCESS_PRIVATE, XPROC_MUTEX_ERRORCHECK);
  const timespec far = monotonic_in(std::chrono::seconds(100));
  EXPECT_EQ(xproc_cond_wait(&monitor.cond, &monitor.mutex), EPERM);
  EXPECT_EQ(xproc_cond_timedwait(&monitor.cond, &monitor.mutex, &far), EPERM);
  ASSERT_EQ(xproc_mutex_lock(&monitor.mutex), 0);
  int wait_code = -1;
  int timed_code = -1;
  std::thread([&] {
    wait_code = xproc_cond_wait(&monitor.cond, &monitor.mutex);
    timed_code = xproc_cond_timedwait(&monitor.cond, &monitor.mutex, &far);
  }).join();
  EXPECT_EQ(wait_code, EPERM);
  EXPECT_EQ(timed_code, EPERM);
  EXPECT_EQ(xproc_mutex_unlock(&monitor.mutex), 0);
}

// tst-cond11, tst-cond23, tst-cond27: attribute getters and setters; CLOCK_MONOTONIC is the
// default and the only clock (glibc also accepts CLOCK_REALTIME; xproc refuses it: EINVAL),
// and a timedwait on it times out at its deadline.
TEST(NptlCond, AttributesDefaultToPrivateMonotonicAndRefuseOtherClocks) {
  xproc_condattr_t attr;
  ASSERT_EQ(xproc_condattr_init(&attr), 0);
  clockid_t clock = CLOCK_REALTIME;
  EXPECT_EQ(xproc_condattr_getclock(&attr, &clock), 0);
  EXPECT_EQ(clock, CLOCK_MONOTONIC);
  EXPECT_EQ(xproc_condattr_setclock(&attr, CLOCK_REALTIME), EINVAL);
  EXPECT_EQ(xproc_condattr_setclock(&attr, CLOCK_PROCESS_CPUTIME_ID), EINVAL);
  EXPECT_EQ(xproc_condattr_setclock(&attr, CLOCK_MONOTONIC), 0);
  EXPECT_EQ(xproc_condattr_getclock(&attr, &clock), 0);
  EXPECT_EQ(clock, CLOCK_MONOTONIC);
  EXPECT_EQ(xproc_condattr_setpshared(&attr, XPROC_PROCESS_SHARED), 0);
  int pshared = -1;
  EXPECT_EQ(xproc_condattr_getpshared(&attr, &pshared), 0);
  EXPECT_EQ(pshared, XPROC_PROCESS_SHARED);
  EXPECT_EQ(xproc_condattr_setpshared(&attr, 7), EINVAL);

  xproc_cond_t cond;
  ASSERT_EQ(xproc_cond_init(&cond, &attr), 0);
  EXPECT_EQ(xproc_condattr_destroy(&attr), 0);
  xproc_mutex_t mutex;
  ASSERT_EQ(make_mutex(&mutex, XPROC_MUTEX_NORMAL, XPROC_MUTEX_STALLED, XPROC_PROCESS_SHARED), 0);
  ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
  const timespec deadline = monotonic_in(milliseconds(30));
  int code = 0;
  while (code == 0) code = xproc_cond_timedwait(&cond, &mutex, &deadline);
  EXPECT_EQ(code, ETIMEDOUT);
  EXPECT_GE(monotonic_now(), to_duration(deadline));
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  EXPECT_EQ(xproc_cond_destroy(&cond), 0);
}

// tst-cond14 and tst-cond15: waiting with a recursive mutex held three times releases it
// completely (another thread can take it) and gives it back at the same depth.
TEST(NptlCond, WaitWithARecursiveMutexHeldThreeTimesRestoresTheDepth) {
  for (bool timed : {false, true}) {
    SCOPED_TRACE(testing::Message() << "timed " << timed);
    Monitor monitor;
    init_monitor(monitor, XPROC_PROCESS_PRIVATE, XPROC_MUTEX_RECURSIVE);
    int failures = 0;
    int unlocks_after = 0;
    std::thread waiter([&] {
      for (int i = 0; i < 3; ++i) failures += xproc_mutex_lock(&monitor.mutex) != 0;
      monitor.waiting = 1;
      while (monitor.go == 0) {
        const timespec deadline = monotonic_in(kHandshakeTimeout);
        const int code = timed ? xproc_cond_timedwait(&monitor.cond, &monitor.mutex, &deadline)
                               : xproc_cond_wait(&monitor.cond, &monitor.mutex);
        failures += code != 0;
      }
      while (xproc_mutex_unlock(&monitor.mutex) == 0) ++unlocks_after;
    });
    ASSERT_TRUE(lock_when_waiting(monitor, 1));  // possible only if the wait released all 3
    monitor.go = 1;
    EXPECT_EQ(xproc_cond_signal(&monitor.cond), 0);
    EXPECT_EQ(xproc_mutex_unlock(&monitor.mutex), 0);
    waiter.join();
    EXPECT_EQ(failures, 0);
    EXPECT_EQ(unlocks_after, 3);
  }
}

// tst-cond16, 17, 18 and 24: a storm of producers and consumers on one condvar, mixing signal
// and broadcast, waits and timed waits, a normal or a recursive mutex: no wake-up is lost
// (every timed wait has a far deadline; hitting it is a failure) and the counts are exact.
int storm(int type, long items) {
  constexpr int kConsumers = 4;
  constexpr int kProducers = 2;
  Monitor monitor;
  if (make_mutex(&monitor.mutex, type, XPROC_MUTEX_STALLED, XPROC_PROCESS_PRIVATE) != 0) return 1;
  if (make_cond(&monitor.cond, XPROC_PROCESS_PRIVATE) != 0) return 1;
  std::atomic<int> failures{0};
  long consumed = 0;  // guarded by mutex
  std::vector<std::thread> threads;
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&, c] {
      for (;;) {
        xproc_mutex_lock(&monitor.mutex);
        while (monitor.tokens == 0 && monitor.go == 0) {
          int code = 0;
          if (c % 2 == 0) {
            code = xproc_cond_wait(&monitor.cond, &monitor.mutex);
          } else {
            const timespec deadline = monotonic_in(std::chrono::seconds(10));
            code = xproc_cond_timedwait(&monitor.cond, &monitor.mutex, &deadline);
          }
          if (code != 0) failures.fetch_add(1);
        }
        if (monitor.tokens == 0) {  // producers finished and nothing left
          xproc_mutex_unlock(&monitor.mutex);
          return;
        }
        --monitor.tokens;
        ++consumed;
        xproc_mutex_unlock(&monitor.mutex);
      }
    });
  }
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (long i = 0; i < items; ++i) {
        xproc_mutex_lock(&monitor.mutex);
        ++monitor.tokens;
        const int code = (i + p) % 3 == 0 ? xproc_cond_broadcast(&monitor.cond)
                                          : xproc_cond_signal(&monitor.cond);
        if (code != 0) failures.fetch_add(1);
        xproc_mutex_unlock(&monitor.mutex);
      }
    });
  }
  for (auto& thread : producers) thread.join();
  xproc_mutex_lock(&monitor.mutex);
  monitor.go = 1;
  xproc_cond_broadcast(&monitor.cond);
  xproc_mutex_unlock(&monitor.mutex);
  for (auto& thread : threads) thread.join();
  if (failures.load() != 0) return 2;
  if (consumed != kProducers * items) return 3;
  return monitor.tokens == 0 ? 0 : 4;
}

TEST(NptlCond, SignalAndBroadcastStormLosesNoWakeUp) {
  const long items = scaled(5000);
  for (int type : {XPROC_MUTEX_NORMAL, XPROC_MUTEX_RECURSIVE, XPROC_MUTEX_ADAPTIVE}) {
    SCOPED_TRACE(testing::Message() << "type " << type);
    run_in_child([&] { return storm(type, items); });
  }
}

// tst-cond20 and tst-cond21: N waiters (waiting, or timed-waiting) are woken by a broadcast, N
// signals, or some signals and a broadcast, with the mutex held or not; right after, the
// condvar is destroyed and its memory clobbered before the waiters have all returned; then it
// is re-initialized for the next round. Woken waiters must never touch it again.
int destroy_after_wake(bool timed, long rounds) {
  constexpr int kWaiters = 6;
  xproc_mutex_t mutex = XPROC_MUTEX_INITIALIZER;
  xproc_cond_t cond = XPROC_COND_INITIALIZER;
  xproc_cond_t all_waiting = XPROC_COND_INITIALIZER;
  int count = 0;  // guarded by mutex
  std::atomic<int> failures{0};
  std::barrier sync(kWaiters + 1);
  std::vector<std::thread> threads;
  xproc_mutex_lock(&mutex);
  for (int t = 0; t < kWaiters; ++t) {
    threads.emplace_back([&] {
      for (long round = 0; round < rounds; ++round) {
        xproc_mutex_lock(&mutex);
        if (++count == kWaiters) xproc_cond_signal(&all_waiting);
        int code = 0;
        if (timed) {
          // Every round wakes every waiter, so (unlike glibc's tst-cond21, which accepts
          // ETIMEDOUT) a timed waiter must be woken long before this deadline.
          const timespec deadline = monotonic_in(std::chrono::seconds(1));
          code = xproc_cond_timedwait(&cond, &mutex, &deadline);
        } else {
          code = xproc_cond_wait(&cond, &mutex);
        }
        if (code != 0) failures.fetch_add(1);
        xproc_mutex_unlock(&mutex);
        sync.arrive_and_wait();  // every waiter is out of the wait
        sync.arrive_and_wait();  // the condvar is re-initialized
      }
    });
  }
  for (long round = 0; round < rounds; ++round) {
    do {
      if (xproc_cond_wait(&all_waiting, &mutex) != 0) failures.fetch_add(1);
    } while (count != kWaiters);
    if (round & 1) xproc_mutex_unlock(&mutex);
    if (round & 2) {
      xproc_cond_broadcast(&cond);
    } else if (round & 4) {
      for (int i = 0; i < kWaiters; ++i) xproc_cond_signal(&cond);
    } else {
      for (long i = 0; i < (round / 8) % kWaiters; ++i) xproc_cond_signal(&cond);
      xproc_cond_broadcast(&cond);
    }
    if ((round & 1) == 0) xproc_mutex_unlock(&mutex);
    if (xproc_cond_destroy(&cond) != 0) failures.fetch_add(1);
    // glibc clobbers with the round number; every other round here clobbers with zero, the
    // state a fresh init also gives, which a waiter that was woken but still reads the condvar
    // cannot tell from the state it started waiting on.
    std::memset(&cond, round % 2 == 0 ? 0 : static_cast<int>(round & 0xff), sizeof cond);
    sync.arrive_and_wait();
    if (failures.load() != 0) _exit(2);  // runs in a forked child: report the first bad round
    xproc_mutex_lock(&mutex);
    count = 0;
    if (xproc_cond_init(&cond, nullptr) != 0) failures.fetch_add(1);
    sync.arrive_and_wait();
  }
  xproc_mutex_unlock(&mutex);
  for (auto& thread : threads) thread.join();
  return failures.load() == 0 ? 0 : 1;
}

// FINDING (reported to the lead, 2026-11-23): both fail against CondVar as of HEAD (glibc's
// pthread_cond_* pass the same scenario): a
// waiter still in its spin phase (CondVar::park: spin_until(seq_ != ticket.seq)) when the
// broadcast increments seq_ and the condvar is destroyed and zeroed (or re-initialized) at
// once sees seq_ equal to its ticket again, parks on the dead word and never returns. POSIX
// (and xproc_cond_destroy's comment) allow destroying a condvar whose waiters were all woken.
TEST(NptlCond, DestroyRightAfterWakingAllWaitersIsSafe) {
  const long rounds = scaled(200);
  run_in_child([&] { return destroy_after_wake(false, rounds); }, std::chrono::seconds(10));
}

TEST(NptlCond, DestroyRightAfterWakingAllTimedWaitersIsSafe) {
  const long rounds = scaled(200);
  run_in_child([&] { return destroy_after_wake(true, rounds); }, std::chrono::seconds(10));
}

// tst-cond19: a timedwait with tv_nsec outside [0, 1e9) is EINVAL, and the caller still holds
// the mutex.
TEST(NptlCond, TimedwaitWithABadTimespecIsEinvalAndKeepsTheMutex) {
  Monitor monitor;
  init_monitor(monitor, XPROC_PROCESS_PRIVATE, XPROC_MUTEX_ERRORCHECK);
  ASSERT_EQ(xproc_mutex_lock(&monitor.mutex), 0);
  timespec negative = monotonic_in(milliseconds(10));
  negative.tv_nsec = -1;
  const timespec too_big = bad_timespec();
  EXPECT_EQ(xproc_cond_timedwait(&monitor.cond, &monitor.mutex, &negative), EINVAL);
  EXPECT_EQ(xproc_cond_timedwait(&monitor.cond, &monitor.mutex, &too_big), EINVAL);
  EXPECT_EQ(xproc_mutex_lock(&monitor.mutex), EDEADLK);  // still ours
  EXPECT_EQ(xproc_mutex_unlock(&monitor.mutex), 0);
}

// tst-mutex8 (condvar part): while a thread waits on a condvar with the mutex, the mutex can
// be locked and unlocked by others; once the waiter has left, the mutex can be destroyed.
// glibc also expects destroy to say EBUSY while a waiter is parked (the mutex unlocked);
// xproc's mutex does not know about condvar waiters and documents EBUSY only while locked, so
// that part is left out (docs/design/nptl-test-port.md).
TEST(NptlCond, MutexOfAParkedWaiterStaysUsableAndIsDestroyableAfterIt) {
  for (int type :
       {XPROC_MUTEX_NORMAL, XPROC_MUTEX_ERRORCHECK, XPROC_MUTEX_RECURSIVE, XPROC_MUTEX_ADAPTIVE}) {
    SCOPED_TRACE(testing::Message() << "type " << type);
    Monitor monitor;
    init_monitor(monitor, XPROC_PROCESS_PRIVATE, type);
    int code = -1;
    std::thread waiter([&] {
      xproc_mutex_lock(&monitor.mutex);
      monitor.waiting = 1;
      while (monitor.go == 0) code = xproc_cond_wait(&monitor.cond, &monitor.mutex);
      xproc_mutex_unlock(&monitor.mutex);
    });
    ASSERT_TRUE(lock_when_waiting(monitor, 1));
    EXPECT_EQ(xproc_mutex_unlock(&monitor.mutex), 0);
    EXPECT_EQ(xproc_mutex_trylock(&monitor.mutex), 0);
    EXPECT_EQ(xproc_mutex_destroy(&monitor.mutex), EBUSY);  // locked by us
    monitor.go = 1;
    EXPECT_EQ(xproc_cond_signal(&monitor.cond), 0);
    EXPECT_EQ(xproc_mutex_unlock(&monitor.mutex), 0);
    waiter.join();
    EXPECT_EQ(code, 0);
    EXPECT_EQ(xproc_cond_destroy(&monitor.cond), 0);
    EXPECT_EQ(xproc_mutex_destroy(&monitor.mutex), 0);
  }
}

// tst-robust7: waiters of several processes wait on a process-shared condvar with a robust
// mutex; after one broadcast, each returns from cond_wait holding the mutex and dies holding
// it. The first to return finds it healthy (0); every later one gets EOWNERDEAD from
// cond_wait itself; afterwards the parent gets EOWNERDEAD too.
TEST(NptlCond, OwnerDeathIsReportedByCondWaitToEachLaterWaiter) {
  constexpr int kWaiters = 5;
  SharedObject<Monitor> monitor;
  init_monitor(*monitor, XPROC_PROCESS_SHARED, XPROC_MUTEX_NORMAL, XPROC_MUTEX_ROBUST);
  std::vector<Child> children;
  for (int w = 0; w < kWaiters; ++w) {
    children.push_back(Child::start([&, w] {
      if (xproc_mutex_lock(&monitor->mutex) != 0) return 1;
      ++monitor->waiting;
      int code = 0;
      while (monitor->go == 0 && code == 0) code = xproc_cond_wait(&monitor->cond, &monitor->mutex);
      monitor->results[w] = code == 0 ? 1 : code;  // 1 = returned healthy
      return 0;  // exits holding the mutex (code 0 or EOWNERDEAD: it is held either way)
    }));
  }
  ASSERT_TRUE(lock_when_waiting(*monitor, kWaiters));
  monitor->go = 1;
  EXPECT_EQ(xproc_cond_broadcast(&monitor->cond), 0);
  EXPECT_EQ(xproc_mutex_unlock(&monitor->mutex), 0);
  for (auto& child : children) EXPECT_TRUE(child.wait(kHandshakeTimeout).ok());
  int healthy = 0;
  int owner_dead = 0;
  for (int w = 0; w < kWaiters; ++w) {
    healthy += monitor->results[w] == 1;
    owner_dead += monitor->results[w] == EOWNERDEAD;
  }
  EXPECT_EQ(healthy, 1);
  EXPECT_EQ(owner_dead, kWaiters - 1);
  EXPECT_EQ(xproc_mutex_lock(&monitor->mutex), EOWNERDEAD);
  EXPECT_EQ(xproc_mutex_unlock(&monitor->mutex), 0);
  EXPECT_EQ(xproc_mutex_lock(&monitor->mutex), ENOTRECOVERABLE);
  EXPECT_EQ(xproc_mutex_destroy(&monitor->mutex), 0);
}

}  // namespace
}  // namespace xproc::test
