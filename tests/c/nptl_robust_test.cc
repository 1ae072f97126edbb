// Scenarios of glibc's robust-mutex tests (tst-robust1..10, tst-robust-fork), ported to xproc's
// C API. glibc kills the owner thread by cancellation; here owners die by returning from their
// thread while holding the lock, by _exit, or by SIGKILL of their process: every death the
// kernel's robust list reports. tst-robust7 (death inside cond_wait) is in nptl_cond_test.cc.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <thread>
#include <vector>

#include "child_process.h"
#include "nptl_test_support.h"
#include "shared_object.h"
#include "xproc/c/sync.h"

namespace xproc::test {
namespace {

using std::chrono::milliseconds;

// How the survivor takes the mutex of the dead owner (tst-robust1: lock, tst-robust2: trylock,
// tst-robust3: timedlock with a far deadline).
enum class LockWith { lock, trylock, timedlock };

int lock_with(LockWith how, xproc_mutex_t* mutex) {
  switch (how) {
    case LockWith::lock:
      return xproc_mutex_lock(mutex);
    case LockWith::trylock:
      return xproc_mutex_trylock(mutex);
    case LockWith::timedlock: {
      const timespec deadline = monotonic_in(std::chrono::seconds(20));
      return xproc_mutex_timedlock(mutex, &deadline);
    }
  }
  return -1;
}

const char* name_of(LockWith how) {
  return how == LockWith::lock ? "lock" : how == LockWith::trylock ? "trylock" : "timedlock";
}

// Two robust mutexes, the owner's progress and the survivor's.
struct TwoMutexes {
  xproc_mutex_t first;
  xproc_mutex_t second;
  std::atomic<int> owner_stage{0};   // 1: holds both
  std::atomic<int> waiter_stage{0};  // 1: about to block on the first
};

// After the owner died holding both: the survivor gets EOWNERDEAD from each, then either
// repairs them (consistent; they work as before) or unlocks without repairing (every later lock
// is ENOTRECOVERABLE, destroy still works).
void check_survivor_after_death(TwoMutexes& pair, int first_code, LockWith how, bool repair) {
  EXPECT_EQ(first_code, EOWNERDEAD);
  EXPECT_EQ(lock_with(how, &pair.second), EOWNERDEAD);
  if (repair) {
    EXPECT_EQ(xproc_mutex_consistent(&pair.first), 0);
    EXPECT_EQ(xproc_mutex_consistent(&pair.second), 0);
  }
  EXPECT_EQ(xproc_mutex_unlock(&pair.first), 0);
  EXPECT_EQ(xproc_mutex_unlock(&pair.second), 0);
  if (repair) {
    EXPECT_EQ(lock_with(how, &pair.first), 0);
    EXPECT_EQ(xproc_mutex_unlock(&pair.first), 0);
  } else {
    EXPECT_EQ(lock_with(how, &pair.first), ENOTRECOVERABLE);
    EXPECT_EQ(lock_with(how, &pair.second), ENOTRECOVERABLE);
  }
  EXPECT_EQ(xproc_mutex_destroy(&pair.first), 0);
  EXPECT_EQ(xproc_mutex_destroy(&pair.second), 0);
}

// tst-robust1..6: a thread dies (here: returns) holding two robust mutexes; the survivor gets
// both with EOWNERDEAD, whether it asks after the death (every round for trylock, odd rounds
// otherwise) or is already blocked when the owner dies (even rounds of lock and timedlock).
TEST(NptlRobust, ThreadExitHoldingTwoRobustMutexesHandsBothOverWithOwnerDead) {
  for (LockWith how : {LockWith::lock, LockWith::trylock, LockWith::timedlock}) {
    for (bool repair : {true, false}) {
      for (int round = 1; round <= 4; ++round) {
        SCOPED_TRACE(testing::Message()
                     << name_of(how) << " repair " << repair << " round " << round);
        TwoMutexes pair;
        ASSERT_EQ(
            make_mutex(&pair.first, XPROC_MUTEX_NORMAL, XPROC_MUTEX_ROBUST, XPROC_PROCESS_PRIVATE),
            0);
        ASSERT_EQ(
            make_mutex(&pair.second, XPROC_MUTEX_NORMAL, XPROC_MUTEX_ROBUST, XPROC_PROCESS_PRIVATE),
            0);
        const bool block_first = how != LockWith::trylock && round % 2 == 0;
        int owner_codes[2] = {-1, -1};
        std::thread owner([&] {
          owner_codes[0] = xproc_mutex_lock(&pair.first);
          owner_codes[1] = xproc_mutex_lock(&pair.second);
          announce(pair.owner_stage, 1);
          if (block_first) {
            // Give the main thread a moment to park; EOWNERDEAD is the answer either way.
            if (await_at_least(pair.waiter_stage, 1)) std::this_thread::sleep_for(milliseconds(5));
          }
          // returns holding both: the kernel's robust list reports the death at thread exit
        });
        int first_code = -1;
        if (block_first) {
          ASSERT_TRUE(await_at_least(pair.owner_stage, 1));
          announce(pair.waiter_stage, 1);
          first_code = lock_with(how, &pair.first);
          owner.join();
        } else {
          owner.join();
          first_code = lock_with(how, &pair.first);
        }
        EXPECT_EQ(owner_codes[0], 0);
        EXPECT_EQ(owner_codes[1], 0);
        check_survivor_after_death(pair, first_code, how, repair);
      }
    }
  }
}

// The same across processes: a forked child holding two process-shared robust mutexes dies by
// _exit (odd rounds) or SIGKILL (even rounds), with the parent already blocked or asking later.
TEST(NptlRobust, ProcessDeathHoldingTwoRobustMutexesHandsBothOverWithOwnerDead) {
  for (LockWith how : {LockWith::lock, LockWith::trylock, LockWith::timedlock}) {
    for (bool repair : {true, false}) {
      for (int round = 1; round <= 4; ++round) {
        SCOPED_TRACE(testing::Message()
                     << name_of(how) << " repair " << repair << " round " << round);
        SharedObject<TwoMutexes> pair;
        ASSERT_EQ(make_mutex(&pair->first, XPROC_MUTEX_ERRORCHECK, XPROC_MUTEX_ROBUST,
                             XPROC_PROCESS_SHARED),
                  0);
        ASSERT_EQ(make_mutex(&pair->second, XPROC_MUTEX_RECURSIVE, XPROC_MUTEX_ROBUST,
                             XPROC_PROCESS_SHARED),
                  0);
        const bool killed = round % 2 == 0;
        const bool block_first = how != LockWith::trylock && round > 2;
        auto child = Child::start([&] {
          if (xproc_mutex_lock(&pair->first) != 0) return 1;
          if (xproc_mutex_lock(&pair->second) != 0) return 2;
          announce(pair->owner_stage, 1);
          if (killed) {
            pause();  // until the parent's SIGKILL
            return 3;
          }
          if (block_first && await_at_least(pair->waiter_stage, 1)) {
            std::this_thread::sleep_for(milliseconds(5));
          }
          _exit(0);  // holding both
        });
        ASSERT_TRUE(await_at_least(pair->owner_stage, 1));
        int first_code = -1;
        std::thread waiter;  // joined below on every path that starts it
        if (block_first) {
          // The thread that gets the first mutex owns it, so it does the whole check.
          waiter = std::thread([&] {
            announce(pair->waiter_stage, 1);
            first_code = lock_with(how, &pair->first);
            check_survivor_after_death(*pair, first_code, how, repair);
          });
          ASSERT_TRUE(await_at_least(pair->waiter_stage, 1));
        }
        if (killed) {
          if (block_first) std::this_thread::sleep_for(milliseconds(5));
          child.kill(SIGKILL);
        }
        const ChildStatus status = child.wait(kHandshakeTimeout);
        if (killed) {
          EXPECT_TRUE(status.signaled && status.term_signal == SIGKILL);
        } else {
          EXPECT_TRUE(status.ok()) << "exit code " << status.exit_code;
        }
        if (block_first) {
          waiter.join();
        } else {
          first_code = lock_with(how, &pair->first);
          check_survivor_after_death(*pair, first_code, how, repair);
        }
      }
    }
  }
}

// tst-robust7 lives in nptl_cond_test.cc.

// tst-robust8: children whose threads lock, timedlock (past deadline) and trylock random
// mutexes of a table of process-shared robust mutexes are SIGKILLed at an arbitrary instant;
// afterwards every mutex is free or owner-dead (never stuck), unlocking without consistent
// makes exactly the owner-dead ones unrecoverable, and all of them can be destroyed.
constexpr int kTableSize = 32;
constexpr int kTableThreads = 3;

struct RobustTable {
  xproc_mutex_t mutexes[kTableSize];
  std::atomic<long> operations[kTableThreads];
  std::atomic<int> failures{0};
};

std::uint32_t next_random(std::uint32_t& state) {  // xorshift32
  state ^= state << 13;
  state ^= state >> 17;
  state ^= state << 5;
  return state;
}

void churn(RobustTable& table, int thread, std::uint32_t seed) {
  bool held[kTableSize] = {};
  const timespec past = monotonic_in(milliseconds(-1));
  for (;;) {
    const auto index = static_cast<int>(next_random(seed) % kTableSize);
    xproc_mutex_t* mutex = &table.mutexes[index];
    if (held[index]) {
      if (xproc_mutex_unlock(mutex) != 0) table.failures.fetch_add(1);
      held[index] = false;
    } else {
      // Thread 0 blocks in lock; the others never block, so no cycle of waits can form.
      const int code = thread == 0   ? xproc_mutex_lock(mutex)
                       : thread == 1 ? xproc_mutex_timedlock(mutex, &past)
                                     : xproc_mutex_trylock(mutex);
      if (code == 0) {
        held[index] = true;
      } else if (code != ETIMEDOUT && code != EBUSY) {
        table.failures.fetch_add(1);  // nobody died yet in this process: no EOWNERDEAD
      }
    }
    // release: the parent's acquire read of the count sees the progress it reports
    table.operations[thread].fetch_add(1, std::memory_order_release);
  }
}

TEST(NptlRobust, SigkilledChurningProcessesNeverLeaveAMutexStuck) {
  const long rounds = scaled(4);
  const long operations_before_kill = scaled(300);
  SharedObject<RobustTable> table;
  for (long round = 0; round < rounds; ++round) {
    SCOPED_TRACE(testing::Message() << "round " << round);
    for (auto& mutex : table->mutexes) {
      ASSERT_EQ(make_mutex(&mutex, XPROC_MUTEX_NORMAL, XPROC_MUTEX_ROBUST, XPROC_PROCESS_SHARED),
                0);
    }
    for (auto& count : table->operations) count.store(0);
    auto child = Child::start([&] {
      std::vector<std::thread> threads;
      for (int t = 0; t < kTableThreads; ++t) {
        threads.emplace_back(churn, std::ref(*table), t,
                             static_cast<std::uint32_t>(0x9e3779b9L * (round + 1) + t * 7919L + 1));
      }
      for (auto& thread : threads) thread.join();  // never: the parent kills us
      return 1;
    });
    const auto deadline = monotonic_now() + kHandshakeTimeout;
    for (auto& count : table->operations) {
      while (count.load(std::memory_order_acquire) < operations_before_kill &&
             monotonic_now() < deadline) {
        sched_yield();
      }
    }
    child.kill(SIGKILL);
    const ChildStatus status = child.wait(kHandshakeTimeout);
    EXPECT_TRUE(status.signaled && status.term_signal == SIGKILL);
    for (auto& count : table->operations) EXPECT_GE(count.load(), operations_before_kill);
    EXPECT_EQ(table->failures.load(), 0);

    bool owner_died[kTableSize] = {};
    for (int i = 0; i < kTableSize; ++i) {
      const timespec deadline_for_lock = monotonic_in(std::chrono::seconds(10));
      const int code = xproc_mutex_timedlock(&table->mutexes[i], &deadline_for_lock);
      EXPECT_TRUE(code == 0 || code == EOWNERDEAD) << "mutex " << i << " gave " << code;
      owner_died[i] = code == EOWNERDEAD;
    }
    for (auto& mutex : table->mutexes) EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
    for (int i = 0; i < kTableSize; ++i) {
      const int code = xproc_mutex_trylock(&table->mutexes[i]);
      EXPECT_EQ(code, owner_died[i] ? ENOTRECOVERABLE : 0) << "mutex " << i;
      if (code == 0) {
        EXPECT_EQ(xproc_mutex_unlock(&table->mutexes[i]), 0);
      }
    }
    for (auto& mutex : table->mutexes) EXPECT_EQ(xproc_mutex_destroy(&mutex), 0);
  }
}

// tst-robust9: threads take a robust mutex one after the other and each exits holding it; the
// first finds it free, every later one gets EOWNERDEAD, repairs it and dies holding it again.
TEST(NptlRobust, SuccessiveThreadsDyingWithTheMutexEachHandItOnAsOwnerDead) {
  xproc_mutex_t mutex;
  ASSERT_EQ(make_mutex(&mutex, XPROC_MUTEX_NORMAL, XPROC_MUTEX_ROBUST, XPROC_PROCESS_PRIVATE), 0);
  constexpr int kThreads = 3;
  int lock_codes[kThreads] = {-1, -1, -1};
  int consistent_codes[kThreads] = {-1, -1, -1};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      lock_codes[t] = xproc_mutex_lock(&mutex);
      consistent_codes[t] = lock_codes[t] == EOWNERDEAD ? xproc_mutex_consistent(&mutex) : 0;
      // exits holding it
    });
  }
  for (auto& thread : threads) thread.join();
  int free_count = 0;
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_TRUE(lock_codes[t] == 0 || lock_codes[t] == EOWNERDEAD) << lock_codes[t];
    EXPECT_EQ(consistent_codes[t], 0);
    free_count += lock_codes[t] == 0 ? 1 : 0;
  }
  EXPECT_EQ(free_count, 1);  // only the first taker found it free
  EXPECT_EQ(xproc_mutex_lock(&mutex), EOWNERDEAD);
  EXPECT_EQ(xproc_mutex_consistent(&mutex), 0);
  EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
  EXPECT_EQ(xproc_mutex_destroy(&mutex), 0);
}

// tst-robust10: a robust mutex held by a LIVE owner gives another thread's timedlock ETIMEDOUT
// (robustness never mistakes a living owner for a dead one).
TEST(NptlRobust, TimedlockOnARobustMutexOfALiveOwnerTimesOut) {
  for (int pshared : {XPROC_PROCESS_PRIVATE, XPROC_PROCESS_SHARED}) {
    xproc_mutex_t mutex;
    ASSERT_EQ(make_mutex(&mutex, XPROC_MUTEX_NORMAL, XPROC_MUTEX_ROBUST, pshared), 0);
    ASSERT_EQ(xproc_mutex_lock(&mutex), 0);
    int code = -1;
    std::thread([&] {
      const timespec deadline = monotonic_in(milliseconds(100));
      code = xproc_mutex_timedlock(&mutex, &deadline);
    }).join();
    EXPECT_EQ(code, ETIMEDOUT);
    EXPECT_EQ(xproc_mutex_unlock(&mutex), 0);
    EXPECT_EQ(xproc_mutex_destroy(&mutex), 0);
  }
}

// tst-robust-fork: fork while holding mutexes of every combination of process-shared, robust
// and error-checking, in the parent, a forked child and private memory. A child that exits
// holding a robust mutex reports it to the next child; a child that unmaps the shared memory
// before exiting does not crash on the parent's mutexes; the child starts with none of the
// parent's robust locks and may re-initialize a private mutex the parent holds.
constexpr int kPshared = 1;
constexpr int kRobust = 2;
constexpr int kCheck = 4;
constexpr int kAllBits = 7;

int make_from_bits(xproc_mutex_t* mutex, int bits) {
  return make_mutex(mutex, (bits & kCheck) != 0 ? XPROC_MUTEX_ERRORCHECK : XPROC_MUTEX_DEFAULT,
                    (bits & kRobust) != 0 ? XPROC_MUTEX_ROBUST : XPROC_MUTEX_STALLED,
                    (bits & kPshared) != 0 ? XPROC_PROCESS_SHARED : XPROC_PROCESS_PRIVATE);
}

struct ForkPair {
  xproc_mutex_t parent_mutex;
  xproc_mutex_t child_mutex;
};

void fork_combination(int parent_bits, int child_bits, int private_bits, bool lock_private,
                      bool lock_in_child) {
  auto* shared = static_cast<ForkPair*>(
      mmap(nullptr, sizeof(ForkPair), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(shared, MAP_FAILED);
  ASSERT_EQ(make_from_bits(&shared->parent_mutex, parent_bits), 0);
  ASSERT_EQ(make_from_bits(&shared->child_mutex, child_bits), 0);
  ASSERT_EQ(xproc_mutex_lock(&shared->parent_mutex), 0);
  xproc_mutex_t private_mutex;
  ASSERT_EQ(make_from_bits(&private_mutex, private_bits), 0);
  if (lock_private) {
    ASSERT_EQ(xproc_mutex_lock(&private_mutex), 0);
  }

  auto first = Child::start([&] {
    if (lock_in_child) {
      if (xproc_mutex_lock(&shared->child_mutex) != 0) return 1;
    } else if (munmap(shared, sizeof(ForkPair)) != 0) {
      return 2;
    }
    if (lock_private && make_from_bits(&private_mutex, private_bits) != 0) return 3;
    if (xproc_mutex_lock(&private_mutex) != 0) return 4;
    // A robust child mutex is left for the exit to release (as owner-dead).
    if (lock_in_child && (child_bits & kRobust) == 0 &&
        xproc_mutex_unlock(&shared->child_mutex) != 0) {
      return 5;
    }
    return 0;
  });
  const ChildStatus first_status = first.wait(kHandshakeTimeout);
  EXPECT_TRUE(first_status.ok()) << "first child exit code " << first_status.exit_code;

  // xproc reports a relock by the owner as EDEADLK for every non-recursive kind.
  EXPECT_EQ(xproc_mutex_lock(&shared->parent_mutex), EDEADLK);

  auto second = Child::start([&] {
    if ((parent_bits & kPshared) != 0 && xproc_mutex_trylock(&shared->parent_mutex) != EBUSY) {
      return 1;
    }
    if (lock_in_child && (child_bits & kRobust) != 0) {
      if ((child_bits & kPshared) == 0) return 0;  // a private robust mutex: nothing to check
      if (xproc_mutex_lock(&shared->child_mutex) != EOWNERDEAD) return 2;
      if (xproc_mutex_consistent(&shared->child_mutex) != 0) return 3;
    } else if (xproc_mutex_lock(&shared->child_mutex) != 0) {
      return 4;
    }
    return xproc_mutex_unlock(&shared->child_mutex) == 0 ? 0 : 5;
  });
  const ChildStatus second_status = second.wait(kHandshakeTimeout);
  EXPECT_TRUE(second_status.ok()) << "second child exit code " << second_status.exit_code;

  if (lock_private) {
    EXPECT_EQ(xproc_mutex_unlock(&private_mutex), 0);
  }
  EXPECT_EQ(xproc_mutex_unlock(&shared->parent_mutex), 0);
  EXPECT_EQ(xproc_mutex_destroy(&shared->parent_mutex), 0);
  EXPECT_EQ(xproc_mutex_destroy(&shared->child_mutex), 0);
  EXPECT_EQ(xproc_mutex_destroy(&private_mutex), 0);
  EXPECT_EQ(munmap(shared, sizeof(ForkPair)), 0);
}

TEST(NptlRobust, ForkWithHeldMutexesOfEveryCombinationKeepsOwnershipPerProcess) {
  // Every parent/child/private combination with locked-or-not; at scale 1 the private mutex's
  // bits follow the other two (all 8 values still occur), at scale >= 8 all of them are tried.
  const bool exhaustive = scaled(1) >= 8;
  for (int parent_bits = 0; parent_bits <= kAllBits; ++parent_bits) {
    for (int child_bits = 0; child_bits <= kAllBits; ++child_bits) {
      for (int private_bits = 0; private_bits <= kAllBits; ++private_bits) {
        if (!exhaustive && private_bits != (parent_bits + child_bits) % (kAllBits + 1)) continue;
        for (bool lock_private : {false, true}) {
          for (bool lock_in_child : {false, true}) {
            SCOPED_TRACE(testing::Message() << "parent " << parent_bits << " child " << child_bits
                                            << " private " << private_bits << " lock_private "
                                            << lock_private << " lock_in_child " << lock_in_child);
            fork_combination(parent_bits, child_bits, private_bits, lock_private, lock_in_child);
            if (HasFailure()) return;  // one failing combination is report enough
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace xproc::test
