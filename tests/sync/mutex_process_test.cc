// Mutex between processes on MAP_SHARED memory: exclusion, and every way an owner can die
// (SIGKILL, exec, zombie, a PID namespace of its own) reported to the survivors as owner_died.
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>
#include <vector>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/detail/mutex_access.h"
#include "xproc/sync/mutex.h"
#include "xproc/sync/participant_table.h"
#include "xproc/sys/file.h"
#include "xproc/sys/memory.h"
#include "xproc/sys/robust_list.h"
#include "xproc/sys/shared_memory.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

MutexOptions options_of(MutexKind kind, std::uint32_t spin_rounds = kMutexDefaultSpinRounds) {
  MutexOptions options;
  options.kind = kind;
  options.spin_rounds = spin_rounds;
  return options;
}

struct Shared {
  explicit Shared(MutexOptions options = {}) : mutex(Scope::process, options) {}
  Mutex mutex;
  std::atomic<int> stage{0};
  std::atomic<int> child_result{0};
  std::atomic<pid_t> victim{0};
  long counter = 0;  // protected by mutex
};

// Spins (yielding) until `flag` reaches `value`; false after `timeout` (a test failure).
bool wait_for(const std::atomic<int>& flag, int value, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = Clock::now() + timeout;
  while (flag.load() < value) {
    if (Clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

// True once a thread has parked on the mutex (WAITERS set).
bool wait_for_parked_waiter(Mutex& mutex, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = Clock::now() + timeout;
  while ((detail::MutexAccess::word(mutex).load() & sys::kFutexWaitersBit) == 0) {
    if (Clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

// A child that locks, says so, and waits to be killed.
test::Child start_holder(Shared& shared) {
  return test::Child::start([&shared] {
    if (shared.mutex.acquire()) return 1;
    shared.stage.store(1);
    for (;;) pause();
  });
}

TEST(MutexProcess, ExcludesFourProcessesOfThreadsWithAnExactCounter) {
  for (std::uint32_t spin : {0u, kMutexDefaultSpinRounds}) {
    test::SharedObject<Shared> shared(options_of(MutexKind::normal, spin));
    constexpr int kProcesses = 4, kThreads = 2;
    const long iterations = test::scaled(5000);
    std::vector<test::Child> children;
    for (int p = 0; p < kProcesses; ++p) {
      children.push_back(test::Child::start([&] {
        std::vector<std::thread> threads;
        for (int t = 0; t < kThreads; ++t) {
          threads.emplace_back([&] {
            for (long i = 0; i < iterations; ++i) {
              std::lock_guard guard(shared->mutex);
              ++shared->counter;
            }
          });
        }
        for (auto& thread : threads) thread.join();
        return 0;
      }));
    }
    for (auto& child : children) EXPECT_TRUE(child.wait().ok());
    EXPECT_EQ(shared->counter, kProcesses * kThreads * iterations);
    EXPECT_FALSE(shared->mutex.acquire());
    EXPECT_FALSE(shared->mutex.release());
  }
}

TEST(MutexProcess, WaiterSeesOwnerDiedWithinMillisecondsOfAnOwnerSigkill) {
  constexpr int kRuns = 15;
  std::vector<double> latencies_ms;
  for (int run = 0; run < kRuns; ++run) {
    test::SharedObject<Shared> shared;
    auto holder = start_holder(*shared);
    ASSERT_TRUE(wait_for(shared->stage, 1));
    std::error_code seen;
    Clock::time_point woken;
    std::error_code repaired, released;
    std::thread waiter([&] {
      seen = shared->mutex.acquire();
      woken = Clock::now();
      EXPECT_TRUE(shared->mutex.is_locked_by_caller());
      repaired = shared->mutex.make_consistent();
      released = shared->mutex.release();
    });
    ASSERT_TRUE(wait_for_parked_waiter(shared->mutex));
    const auto killed = Clock::now();
    holder.kill(SIGKILL);
    waiter.join();
    EXPECT_EQ(seen, errc::owner_died);
    latencies_ms.push_back(std::chrono::duration<double, std::milli>(woken - killed).count());
    EXPECT_FALSE(repaired);
    EXPECT_FALSE(released);
    EXPECT_FALSE(shared->mutex.acquire());
    EXPECT_FALSE(shared->mutex.release());
    EXPECT_TRUE(holder.wait().signaled);
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());
  const double median = latencies_ms[latencies_ms.size() / 2];
  std::printf("owner-death wake-up latency over %d runs: median %.3f ms, max %.3f ms\n", kRuns,
              median, latencies_ms.back());
  RecordProperty("owner_death_wakeup_median_us", static_cast<int>(median * 1000));
  EXPECT_LT(latencies_ms.back(), 2000.0);
}

TEST(MutexProcess, OwnerDiedThenUnlockWithoutRepairIsNotRecoverableInEveryProcess) {
  test::SharedObject<Shared> shared;
  auto holder = start_holder(*shared);
  ASSERT_TRUE(wait_for(shared->stage, 1));
  holder.kill(SIGKILL);
  EXPECT_TRUE(holder.wait().signaled);
  // A second process parks until the first repairer gives up.
  ASSERT_EQ(shared->mutex.acquire(), errc::owner_died);
  auto waiter = test::Child::start([&] {
    shared->stage.store(2);
    return shared->mutex.acquire() == errc::not_recoverable ? 0 : 1;
  });
  ASSERT_TRUE(wait_for(shared->stage, 2));
  ASSERT_TRUE(wait_for_parked_waiter(shared->mutex));
  EXPECT_FALSE(shared->mutex.release());  // without make_consistent()
  EXPECT_TRUE(waiter.wait().ok());
  EXPECT_EQ(shared->mutex.try_acquire(), errc::not_recoverable);
  auto late =
      test::Child::start([&] { return shared->mutex.acquire() == errc::not_recoverable ? 0 : 1; });
  EXPECT_TRUE(late.wait().ok());
}

TEST(MutexProcess, OwnerDiedIsThrownByLockWithTheLockHeld) {
  test::SharedObject<Shared> shared(options_of(MutexKind::error_checking));
  auto holder = start_holder(*shared);
  ASSERT_TRUE(wait_for(shared->stage, 1));
  holder.kill(SIGKILL);
  EXPECT_TRUE(holder.wait().signaled);
  EXPECT_THROW(shared->mutex.lock(), OwnerDied);
  EXPECT_TRUE(shared->mutex.is_locked_by_caller());
  EXPECT_FALSE(shared->mutex.make_consistent());
  shared->mutex.unlock();
  EXPECT_TRUE(shared->mutex.try_lock());
  shared->mutex.unlock();
}

TEST(MutexProcess, ExecWhileHoldingReportsOwnerDied) {
  test::SharedObject<Shared> shared;
  auto child = test::Child::start([&] {
    if (shared->mutex.acquire()) return 1;
    execl("/bin/true", "true", static_cast<char*>(nullptr));
    return 2;
  });
  EXPECT_TRUE(child.wait().ok());
  EXPECT_EQ(shared->mutex.acquire(), errc::owner_died);
  EXPECT_FALSE(shared->mutex.make_consistent());
  EXPECT_FALSE(shared->mutex.release());
}

TEST(MutexProcess, ExecWhileAWaiterIsParkedWakesItWithOwnerDied) {
  test::SharedObject<Shared> shared;
  auto child = test::Child::start([&] {
    if (shared->mutex.acquire()) return 1;
    shared->stage.store(1);
    if (!wait_for(shared->stage, 2)) return 3;
    execl("/bin/true", "true", static_cast<char*>(nullptr));
    return 2;
  });
  ASSERT_TRUE(wait_for(shared->stage, 1));
  std::error_code seen, repaired, released;
  std::thread waiter([&] {
    seen = shared->mutex.acquire();
    repaired = shared->mutex.make_consistent();
    released = shared->mutex.release();
  });
  ASSERT_TRUE(wait_for_parked_waiter(shared->mutex));
  shared->stage.store(2);
  waiter.join();
  EXPECT_EQ(seen, errc::owner_died);
  EXPECT_FALSE(repaired);
  EXPECT_FALSE(released);
  EXPECT_TRUE(child.wait().ok());
}

TEST(MutexProcess, AZombieOwnerIsReportedDead) {
  test::SharedObject<Shared> shared;
  auto holder = start_holder(*shared);
  ASSERT_TRUE(wait_for(shared->stage, 1));
  holder.kill(SIGKILL);
  // Not reaped: the child is a zombie (kill(pid, 0) would still call it alive). The kernel
  // walked its robust list when it died; wait for that without reaping.
  siginfo_t info{};
  ASSERT_EQ(waitid(P_PID, static_cast<id_t>(holder.pid()), &info, WEXITED | WNOWAIT), 0);
  EXPECT_EQ(kill(holder.pid(), 0), 0);  // still "exists"
  EXPECT_EQ(shared->mutex.acquire_until(Clock::now() + 5s), errc::owner_died);
  EXPECT_FALSE(shared->mutex.make_consistent());
  EXPECT_FALSE(shared->mutex.release());
  EXPECT_TRUE(holder.wait().signaled);
}

TEST(MutexProcess, AForkChildDoesNotOwnItsParentsLocks) {
  for (auto kind : {MutexKind::error_checking, MutexKind::recursive, MutexKind::normal}) {
    test::SharedObject<Shared> shared(options_of(kind));
    ASSERT_FALSE(shared->mutex.acquire());
    auto child = test::Child::start([&] {
      if (shared->mutex.is_locked_by_caller()) return 1;
      if (shared->mutex.release() != errc::not_owner) return 2;  // robust: checked for all
      if (shared->mutex.try_acquire() != errc::would_block) return 3;
      if (shared->mutex.acquire_until(Clock::now() + 10ms) != errc::timed_out) return 4;
      return 0;
    });
    EXPECT_TRUE(child.wait().ok()) << static_cast<int>(kind);
    EXPECT_TRUE(shared->mutex.is_locked_by_caller());
    EXPECT_FALSE(shared->mutex.release());
  }
}

TEST(MutexProcess, GlibcRobustMutexInTheSameThreadStillReportsOwnerDead) {
  struct Both {
    Shared shared;
    pthread_mutex_t glibc;
    Mutex second{Scope::process};
  };
  test::SharedObject<Both> both;
  pthread_mutexattr_t attributes;
  pthread_mutexattr_init(&attributes);
  pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
  ASSERT_EQ(pthread_mutex_init(&both->glibc, &attributes), 0);
  pthread_mutexattr_destroy(&attributes);
  auto child = test::Child::start([&] {
    // Interleave: glibc, ours, glibc's list must stay intact through our link and unlink.
    if (both->shared.mutex.acquire()) return 1;
    if (pthread_mutex_lock(&both->glibc) != 0) return 2;
    if (both->second.acquire()) return 3;
    if (both->shared.mutex.release()) return 4;  // unlink from the middle of the list
    both->shared.stage.store(1);
    for (;;) pause();
  });
  ASSERT_TRUE(wait_for(both->shared.stage, 1));
  child.kill(SIGKILL);
  EXPECT_TRUE(child.wait().signaled);
  EXPECT_EQ(pthread_mutex_lock(&both->glibc), EOWNERDEAD);
  EXPECT_EQ(pthread_mutex_consistent(&both->glibc), 0);
  EXPECT_EQ(pthread_mutex_unlock(&both->glibc), 0);
  EXPECT_EQ(both->second.acquire(), errc::owner_died);
  EXPECT_FALSE(both->second.make_consistent());
  EXPECT_FALSE(both->second.release());
  EXPECT_FALSE(both->shared.mutex.acquire());  // released normally before the death
  EXPECT_FALSE(both->shared.mutex.release());
  pthread_mutex_destroy(&both->glibc);
}

// The liveness backstop: deaths the kernel's robust list cannot report (a node not linked, as
// past its 2048-entry walk or in a segment unmapped while held) are found through the
// participant table by a parked waiter within a few backstop intervals.
struct TableFile {
  explicit TableFile(std::uint32_t capacity)
      : file(sys::create_memory_file("mutex_process_test", ParticipantTable::size_for(capacity))
                 .value()),
        mapping(
            sys::SharedMapping::of_file(file.get(), ParticipantTable::size_for(capacity)).value()),
        table(ParticipantTable::create(mapping.data(), mapping.size(), capacity).value()) {}
  sys::FileDescriptor file;
  sys::SharedMapping mapping;
  ParticipantTable* table;
};

// Takes the calling thread's first robust-list entry (the mutex it just locked) out of the list,
// as if the kernel could not reach it.
void hide_first_robust_entry() {
  sys::RobustListHead* head = sys::this_thread_robust_list();
  auto* first = reinterpret_cast<sys::RobustListEntry*>(
      reinterpret_cast<std::uintptr_t>(head->list.next) & ~std::uintptr_t{1});
  head->list.next = first->next;
}

MutexOptions backstop_options(std::chrono::milliseconds interval) {
  MutexOptions options;
  options.backstop_interval = interval;
  return options;
}

TEST(MutexProcess, BackstopReportsADeadOwnerTheKernelListDidNotCover) {
  TableFile table(8);
  Participant me = Participant::attach(*table.table, table.file.get()).value();
  test::SharedObject<Shared> shared(backstop_options(10ms));
  auto holder = test::Child::start([&] {
    Result<Participant> child = Participant::attach(*table.table, table.file.get());
    if (!child) return 1;
    if (shared->mutex.acquire()) return 2;
    hide_first_robust_entry();
    shared->stage.store(1);
    for (;;) pause();
  });
  ASSERT_TRUE(wait_for(shared->stage, 1));
  std::error_code seen, repaired, released;
  Clock::time_point woken;
  std::thread waiter([&] {
    seen = shared->mutex.acquire();
    woken = Clock::now();
    repaired = shared->mutex.make_consistent();
    released = shared->mutex.release();
  });
  ASSERT_TRUE(wait_for_parked_waiter(shared->mutex));
  const auto killed = Clock::now();
  holder.kill(SIGKILL);
  waiter.join();
  EXPECT_TRUE(holder.wait().signaled);
  EXPECT_EQ(seen, errc::owner_died);
  EXPECT_FALSE(repaired);
  EXPECT_FALSE(released);
  const double ms = std::chrono::duration<double, std::milli>(woken - killed).count();
  std::printf("backstop (10 ms interval) owner-death wake-up latency: %.3f ms\n", ms);
  EXPECT_LT(ms, 2000.0);
  EXPECT_FALSE(shared->mutex.acquire());
  EXPECT_FALSE(shared->mutex.release());
}

TEST(MutexProcess, BackstopNeverMarksALiveOwner) {
  TableFile table(8);
  Participant me = Participant::attach(*table.table, table.file.get()).value();
  test::SharedObject<Shared> shared(backstop_options(5ms));
  auto holder = test::Child::start([&] {
    Result<Participant> child = Participant::attach(*table.table, table.file.get());
    if (!child) return 1;
    if (shared->mutex.acquire()) return 2;
    hide_first_robust_entry();
    shared->stage.store(1);
    if (!wait_for(shared->stage, 2, 30s)) return 3;
    return 0;  // exits holding the lock: reported through the backstop only
  });
  ASSERT_TRUE(wait_for(shared->stage, 1));
  // Twenty backstop intervals with the owner alive: the waiter times out, nothing is marked.
  EXPECT_EQ(shared->mutex.acquire_until(Clock::now() + 100ms), errc::timed_out);
  EXPECT_EQ(detail::MutexAccess::word(shared->mutex).load() & sys::kFutexOwnerDiedBit, 0u);
  shared->stage.store(2);
  EXPECT_TRUE(holder.wait().ok());
  EXPECT_EQ(shared->mutex.acquire_until(Clock::now() + 5s), errc::owner_died);
  EXPECT_FALSE(shared->mutex.make_consistent());
  EXPECT_FALSE(shared->mutex.release());
}

// PID namespaces: the owner's TID in the word is relative to its own namespace. Two children,
// each PID 1 of a new namespace, have the same TID; ownership must still tell them apart, and
// the death of either must still reach the parent as owner_died.
TEST(MutexProcess, OwnersInOtherPidNamespacesWithTheSameTidAreToldApart) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for unshare(CLONE_NEWPID)";
  auto probe = test::Child::start([] {
    if (unshare(CLONE_NEWPID) != 0) return 77;
    pid_t inner = fork();
    if (inner == 0) _exit(getpid() == 1 ? 0 : 1);
    int status = 0;
    if (inner < 0 || waitpid(inner, &status, 0) != inner) return 77;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 77;
  });
  auto probe_status = probe.wait();
  if (!probe_status.ok()) GTEST_SKIP() << "unshare(CLONE_NEWPID) is not permitted here";

  struct Namespaced {
    Shared shared{[] {
      MutexOptions options;
      options.kind = MutexKind::error_checking;
      return options;
    }()};
    std::atomic<int> checker_result{-1};
    std::atomic<pid_t> holder_pid{0};
  };
  test::SharedObject<Namespaced> state;
  // Runs `body` as PID 1 of a new PID namespace; the namespace's PID 1 dies with it.
  auto in_new_namespace = [](const std::function<int()>& body, std::atomic<pid_t>* outer_pid) {
    return test::Child::start([body, outer_pid] {
      if (unshare(CLONE_NEWPID) != 0) return 90;
      std::fflush(nullptr);
      pid_t inner = fork();
      if (inner < 0) return 91;
      if (inner == 0) _exit(getpid() == 1 ? body() : 92);
      if (outer_pid != nullptr) outer_pid->store(inner);
      int status = 0;
      while (waitpid(inner, &status, 0) < 0 && errno == EINTR) {
      }
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    });
  };
  auto holder = in_new_namespace(
      [&] {
        if (state->shared.mutex.acquire()) return 1;
        state->shared.stage.store(1);
        for (;;) pause();
      },
      &state->holder_pid);
  ASSERT_TRUE(wait_for(state->shared.stage, 1));
  EXPECT_EQ(detail::MutexAccess::word(state->shared.mutex).load() & sys::kFutexTidMask, 1u);
  auto checker = in_new_namespace(
      [&] {
        // Same TID (1) as the holder, different thread: not the owner.
        if (sys::this_thread_id() != 1) return 10;
        if (state->shared.mutex.is_locked_by_caller()) return 11;
        if (state->shared.mutex.release() != errc::not_owner) return 12;
        if (state->shared.mutex.try_acquire() != errc::would_block) return 13;  // not deadlock
        if (state->shared.mutex.acquire_until(Clock::now() + 10ms) != errc::timed_out) return 14;
        return 0;
      },
      nullptr);
  EXPECT_TRUE(checker.wait().ok());
  // Kill the holder (PID 1 of its namespace) while a parent thread is parked on the lock.
  std::error_code seen, repaired, released;
  std::thread waiter([&] {
    seen = state->shared.mutex.acquire();
    repaired = state->shared.mutex.make_consistent();
    released = state->shared.mutex.release();
  });
  ASSERT_TRUE(wait_for_parked_waiter(state->shared.mutex));
  ASSERT_GT(state->holder_pid.load(), 0);
  ASSERT_EQ(kill(state->holder_pid.load(), SIGKILL), 0);
  waiter.join();
  EXPECT_EQ(seen, errc::owner_died);
  EXPECT_FALSE(repaired);
  EXPECT_FALSE(released);
  auto holder_status = holder.wait();
  EXPECT_TRUE(holder_status.exited);
  EXPECT_EQ(holder_status.exit_code, 128 + SIGKILL);
}

}  // namespace
}  // namespace xproc::sync
