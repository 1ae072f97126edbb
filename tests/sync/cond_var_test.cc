// Thread-level tests of xproc::sync::CondVar: wake accounting, requeue, timed waits, predicate
// overloads, the generic path (std::mutex, a user BasicLockable), recursive mutexes.
#include "xproc/sync/cond_var.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "eventually.h"
#include "xproc/sync/mutex.h"
#include "xproc/sys/thread_id.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

using test::eventually;  // every handshake is bounded: a failure, never a hang

// The scheduler state of thread `tid` of this process ('S' = sleeping in the kernel).
char thread_state(int tid) {
  std::ifstream stat("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() ? '?' : line[close + 2];
}

// N threads each wait once (no predicate) on `cv` with `mutex`; counts returns.
struct Parked {
  Mutex mutex;
  CondVar cv;
  std::atomic<int> entered{0};
  std::atomic<int> returned{0};
  std::vector<std::atomic<int>> tids;
  std::vector<std::thread> threads;

  explicit Parked(int n) : tids(static_cast<std::size_t>(n)) {
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([this, i] {
        std::unique_lock lock(mutex);
        tids[static_cast<std::size_t>(i)].store(sys::this_thread_id());
        entered.fetch_add(1);
        cv.wait(lock);
        returned.fetch_add(1);
      });
    }
  }
  ~Parked() {
    for (auto& t : threads) t.join();
  }
  // Every thread is inside wait and asleep in the kernel (it can only sleep on the condvar's
  // word: it passed the mutex, and none has returned).
  bool all_parked(int expected_sleepers) {
    return eventually([&] {
      if (entered.load() != static_cast<int>(tids.size())) return false;
      int sleeping = 0;
      for (auto& tid : tids) {
        if (thread_state(tid.load()) == 'S') ++sleeping;
      }
      return sleeping == expected_sleepers && cv.waiter_count() == tids.size();
    });
  }
};

TEST(CondVar, ZeroFilledIsValidThreadScope) {
  alignas(CondVar) unsigned char storage[sizeof(CondVar)] = {};
  auto* cv = reinterpret_cast<CondVar*>(storage);
  EXPECT_EQ(cv->scope(), Scope::thread);
  EXPECT_EQ(cv->waiter_count(), 0u);
  cv->notify_one();
  cv->notify_all();
  Mutex mutex;
  mutex.lock();
  EXPECT_EQ(cv->wait_until(mutex, Clock::now()), errc::timed_out);
  EXPECT_TRUE(mutex.is_locked_by_caller());
  mutex.unlock();
}

TEST(CondVar, NotifyWithoutWaitersMakesNoSyscallAndChangesOnlyTheSequence) {
  CondVar cv;
  const std::uint32_t before = cv.sequence();
  cv.notify_one();
  cv.notify_all();
  EXPECT_EQ(cv.sequence(), before + 2);
  EXPECT_EQ(cv.waiter_count(), 0u);
}

TEST(CondVar, NotifyOneWakesExactlyOneOfNParkedWaiters) {
  constexpr int kWaiters = 4;
  Parked parked(kWaiters);
  ASSERT_TRUE(parked.all_parked(kWaiters));
  parked.cv.notify_one();
  ASSERT_TRUE(eventually([&] { return parked.returned.load() == 1; }));
  // The other three are still asleep on the condvar, still counted.
  ASSERT_TRUE(eventually([&] {
    int sleeping = 0;
    for (auto& tid : parked.tids) {
      if (thread_state(tid.load()) == 'S') ++sleeping;
    }
    return sleeping >= kWaiters - 1 && parked.cv.waiter_count() == kWaiters - 1;
  }));
  EXPECT_EQ(parked.returned.load(), 1);
  parked.cv.notify_one();
  ASSERT_TRUE(eventually([&] { return parked.returned.load() == 2; }));
  EXPECT_EQ(parked.cv.waiter_count(), static_cast<unsigned>(kWaiters - 2));
  parked.cv.notify_all();
  ASSERT_TRUE(eventually([&] { return parked.returned.load() == kWaiters; }));
  EXPECT_EQ(parked.cv.waiter_count(), 0u);
}

TEST(CondVar, NotifyAllWakesAllParkedWaiters) {
  constexpr int kWaiters = 6;
  Parked parked(kWaiters);
  ASSERT_TRUE(parked.all_parked(kWaiters));
  parked.cv.notify_all();
  ASSERT_TRUE(eventually([&] { return parked.returned.load() == kWaiters; }));
  EXPECT_EQ(parked.cv.requeue_count(), 0u);
}

TEST(CondVar, NotifyAllWithTheMutexRequeuesOntoTheMutexWordAndWakesAll) {
  constexpr int kWaiters = 6;
  Parked parked(kWaiters);
  ASSERT_TRUE(parked.all_parked(kWaiters));
  {
    std::lock_guard hold(parked.mutex);
    parked.cv.notify_all(parked.mutex);
    EXPECT_EQ(parked.cv.requeue_count(), 1u);
    // One was woken (it now waits for the mutex we hold); the others sit on the mutex word.
    // None can return while we hold the mutex.
    EXPECT_EQ(parked.returned.load(), 0);
  }
  ASSERT_TRUE(eventually([&] { return parked.returned.load() == kWaiters; }));
  EXPECT_FALSE(parked.mutex.is_locked_by_caller());
  EXPECT_TRUE(parked.mutex.try_lock());  // every requeued waiter left the mutex free
  parked.mutex.unlock();
}

// Waiters re-wait at once after each broadcast, while broadcasts requeue them onto the mutex
// word (under the mutex) or wake them (after the unlock): a waiter stranded on the mutex word
// (a requeue it did not notice, so it acquired without keeping WAITERS for the others) would
// stop the rounds. Bounded: a stall aborts the test binary instead of hanging it.
TEST(CondVar, RequeueStressNeverStrandsAWaiter) {
  constexpr int kWaiters = 4;
  const int rounds = static_cast<int>(test::scaled(3000));
  Mutex mutex;
  CondVar cv;
  int generation = 0;    // protected by mutex
  int acknowledged = 0;  // protected by mutex
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWaiters; ++w) {
    threads.emplace_back([&] {
      std::unique_lock lock(mutex);
      for (int seen = 0; seen < rounds;) {
        cv.wait(lock, [&] { return generation > seen; });
        seen = generation;
        ++acknowledged;
        cv.notify_all();  // tell the notifier (it waits on the same condvar)
      }
      done.fetch_add(1);
    });
  }
  std::thread watchdog([&] {
    const auto end = Clock::now() + 60s;
    while (done.load() != kWaiters + 1) {
      if (Clock::now() > end) {
        std::fprintf(stderr, "RequeueStressNeverStrandsAWaiter: stalled (a lost wake-up)\n");
        std::abort();
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  {
    std::unique_lock lock(mutex);
    for (int r = 1; r <= rounds; ++r) {
      ++generation;
      if (r % 2 == 0) {
        cv.notify_all(mutex);  // requeue: we hold the mutex
      } else {
        lock.unlock();
        cv.notify_all(mutex);  // probably unlocked by now: wake all
        lock.lock();
      }
      // Wait until at least one waiter saw this generation, so rounds overlap with requeues.
      cv.wait(lock, [&] { return acknowledged > 0; });
      acknowledged = 0;
    }
  }
  done.fetch_add(1);
  for (auto& t : threads) t.join();
  watchdog.join();
  EXPECT_EQ(done.load(), kWaiters + 1);
  EXPECT_GT(cv.requeue_count(), 0u);
}

TEST(CondVar, NotifyAllWithAnUnlockedMutexWakesAll) {
  constexpr int kWaiters = 3;
  Parked parked(kWaiters);
  ASSERT_TRUE(parked.all_parked(kWaiters));
  parked.cv.notify_all(parked.mutex);  // not held: mark_waiters fails, wake all
  ASSERT_TRUE(eventually([&] { return parked.returned.load() == kWaiters; }));
}

TEST(CondVar, NotifyAllWithAnotherMutexWakesAllInsteadOfRequeueing) {
  constexpr int kWaiters = 3;
  Parked parked(kWaiters);
  ASSERT_TRUE(parked.all_parked(kWaiters));
  Mutex other;
  std::lock_guard hold(other);
  parked.cv.notify_all(other);  // the recorded tag names parked.mutex: no requeue onto `other`
  EXPECT_EQ(parked.cv.requeue_count(), 0u);
  ASSERT_TRUE(eventually([&] { return parked.returned.load() == kWaiters; }));
}

// Broadcast to N waiters that each re-check a predicate under the mutex, with and without
// requeue: count the voluntary context switches of the process (each futex sleep is one).
// Reported, not asserted (timing-dependent).
long broadcast_round_switches(bool requeue, int waiters, int rounds) {
  Mutex mutex;
  CondVar cv;
  int generation = 0;
  int arrived = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < waiters; ++i) {
    threads.emplace_back([&] {
      std::unique_lock lock(mutex);
      for (int r = 1; r <= rounds; ++r) {
        ++arrived;
        cv.wait(lock, [&] { return generation >= r; });
      }
    });
  }
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  for (int r = 1; r <= rounds; ++r) {
    eventually([&] {
      std::lock_guard hold(mutex);
      return arrived == waiters * r;
    });
    std::lock_guard hold(mutex);
    ++generation;
    if (requeue) {
      cv.notify_all(mutex);
    } else {
      cv.notify_all();
    }
  }
  for (auto& t : threads) t.join();
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  return after.ru_nvcsw - before.ru_nvcsw;
}

TEST(CondVar, BroadcastWithRequeueReportsContextSwitches) {
  constexpr int kWaiters = 8;
  const int rounds = static_cast<int>(test::scaled(50));
  const long wake_all = broadcast_round_switches(false, kWaiters, rounds);
  const long requeue = broadcast_round_switches(true, kWaiters, rounds);
  std::printf(
      "broadcast to %d waiters, %d rounds: voluntary context switches: wake-all %ld "
      "(%.1f/round), requeue %ld (%.1f/round)\n",
      kWaiters, rounds, wake_all, static_cast<double>(wake_all) / rounds, requeue,
      static_cast<double>(requeue) / rounds);
  SUCCEED();
}

TEST(CondVar, TimedWaitWithAPastDeadlineReturnsTimedOutWithTheMutexHeld) {
  Mutex mutex;
  CondVar cv;
  mutex.lock();
  EXPECT_EQ(cv.wait_until(mutex, Clock::now() - 1s), errc::timed_out);
  EXPECT_TRUE(mutex.is_locked_by_caller());
  EXPECT_EQ(cv.waiter_count(), 0u);
  mutex.unlock();
}

TEST(CondVar, TimedWaitWithANearDeadlineTimesOutNoEarlierThanTheDeadline) {
  Mutex mutex;
  CondVar cv(Scope::thread, CondVarOptions{.spin_rounds = 0});
  std::unique_lock lock(mutex);
  const auto deadline = Clock::now() + 20ms;
  std::error_code ec;
  do {
    ec = cv.wait_until(mutex, deadline);  // spurious returns are allowed: loop
  } while (!ec);
  EXPECT_EQ(ec, errc::timed_out);
  EXPECT_GE(Clock::now(), deadline);
  EXPECT_EQ(cv.wait_for(lock, 1ms), std::cv_status::timeout);
}

TEST(CondVar, TimedWaitWithAFarDeadlineReturnsWhenNotified) {
  Mutex mutex;
  CondVar cv;
  bool ready = false;
  std::thread notifier([&] {
    std::lock_guard hold(mutex);
    ready = true;
    cv.notify_one();
  });
  std::unique_lock lock(mutex);
  EXPECT_TRUE(cv.wait_for(lock, 1h, [&] { return ready; }));
  lock.unlock();
  notifier.join();
}

TEST(CondVar, PredicateOverloadsOfTheErrorCodeApi) {
  Mutex mutex;
  CondVar cv;
  int value = 0;
  std::thread producer([&] {
    for (int i = 0; i < 3; ++i) {
      std::lock_guard hold(mutex);
      ++value;
      cv.notify_one();
    }
  });
  ASSERT_FALSE(mutex.acquire());
  EXPECT_FALSE(cv.wait(mutex, [&] { return value == 3; }));
  EXPECT_EQ(value, 3);
  EXPECT_EQ(cv.wait_for(mutex, 1ms, [&] { return value == 4; }), errc::timed_out);
  EXPECT_FALSE(cv.wait_until(mutex, Clock::now() - 1s, [&] { return value == 3; }));
  EXPECT_TRUE(mutex.is_locked_by_caller());
  ASSERT_FALSE(mutex.release());
  producer.join();
}

TEST(CondVar, PredicateOverloadsOfTheStdApi) {
  Mutex mutex;
  CondVar cv;
  bool flag = false;
  std::unique_lock lock(mutex);
  EXPECT_FALSE(cv.wait_until(lock, Clock::now() + 1ms, [&] { return flag; }));
  EXPECT_FALSE(cv.wait_for(lock, 1ms, [&] { return flag; }));
  EXPECT_FALSE(cv.wait_until(lock, std::chrono::system_clock::now() + 1ms, [&] { return flag; }));
  flag = true;
  EXPECT_TRUE(cv.wait_for(lock, 1h, [&] { return flag; }));
  cv.wait(lock, [&] { return flag; });
  EXPECT_TRUE(lock.owns_lock());
}

TEST(CondVar, WaitWithoutHoldingTheMutexReturnsNotOwner) {
  Mutex mutex(Scope::thread, MutexOptions{.kind = MutexKind::error_checking});
  CondVar cv;
  EXPECT_EQ(cv.wait(mutex), errc::not_owner);
  EXPECT_EQ(cv.waiter_count(), 0u);
  std::unique_lock<Mutex> unlocked(mutex, std::defer_lock);
  EXPECT_THROW(cv.wait(unlocked), std::system_error);
}

TEST(CondVar, RecursiveMutexWaitReleasesAllLevelsAndRestoresTheDepth) {
  Mutex mutex(Scope::thread, MutexOptions{.kind = MutexKind::recursive});
  CondVar cv;
  bool ready = false;
  bool notifier_got_lock = false;
  mutex.lock();
  mutex.lock();
  mutex.lock();  // depth 3
  std::thread notifier([&] {
    std::lock_guard hold(mutex);  // only possible if the wait released all three levels
    notifier_got_lock = true;
    ready = true;
    cv.notify_one();
  });
  ASSERT_FALSE(cv.wait(mutex, [&] { return ready; }));
  EXPECT_TRUE(notifier_got_lock);
  notifier.join();
  // Depth 3 again: two releases keep it held, the third frees it.
  mutex.unlock();
  mutex.unlock();
  EXPECT_TRUE(mutex.is_locked_by_caller());
  mutex.unlock();
  EXPECT_FALSE(mutex.is_locked_by_caller());
  std::thread other([&] {
    EXPECT_TRUE(mutex.try_lock());
    mutex.unlock();
  });
  other.join();
}

// Also TSan's view: the wait releases and restores all levels in its books (a wrong count
// shows up as a report on the data or on the mutex itself under TSan).
TEST(CondVar, RecursiveRobustMutexWaitHandsTheDataOverAtEveryLevel) {
  Mutex mutex(Scope::thread,
              MutexOptions{.kind = MutexKind::recursive, .robustness = Robustness::robust});
  CondVar cv;
  int turn = 0;  // protected by mutex
  const int rounds = static_cast<int>(test::scaled(200));
  std::thread other([&] {
    for (int i = 0; i < rounds; ++i) {
      std::lock_guard outer(mutex);
      std::lock_guard inner(mutex);  // depth 2 across the wait
      ASSERT_FALSE(cv.wait(mutex, [&] { return turn % 2 == 1; }));
      ++turn;
      cv.notify_one();
    }
  });
  for (int i = 0; i < rounds; ++i) {
    std::lock_guard outer(mutex);
    ASSERT_FALSE(cv.wait(mutex, [&] { return turn % 2 == 0; }));
    ++turn;
    cv.notify_one();
  }
  other.join();
  std::lock_guard hold(mutex);
  EXPECT_EQ(turn, 2 * rounds);
}

TEST(CondVar, GenericPathWithStdMutex) {
  std::mutex mutex;
  CondVar cv;
  int turn = 0;
  const int rounds = static_cast<int>(test::scaled(2000));
  std::thread other([&] {
    std::unique_lock lock(mutex);
    for (int i = 0; i < rounds; ++i) {
      cv.wait(lock, [&] { return turn % 2 == 1; });
      ++turn;
      cv.notify_one();
    }
  });
  {
    std::unique_lock lock(mutex);
    for (int i = 0; i < rounds; ++i) {
      cv.wait(lock, [&] { return turn % 2 == 0; });
      ++turn;
      cv.notify_one();
    }
    cv.wait(lock, [&] { return turn == 2 * rounds; });
    EXPECT_EQ(cv.wait_for(lock, 1ms), std::cv_status::timeout);
  }
  other.join();
  EXPECT_EQ(turn, 2 * rounds);
}

// A user BasicLockable: a test-and-set spin lock that counts lock()/unlock() calls.
class CountingSpinLock {
 public:
  void lock() {
    while (flag_.exchange(true, std::memory_order_acquire)) std::this_thread::yield();
    ++locks;
  }
  void unlock() {
    ++unlocks;
    flag_.store(false, std::memory_order_release);
  }
  int locks = 0;  // protected by the lock itself
  int unlocks = 0;

 private:
  std::atomic<bool> flag_{false};
};

TEST(CondVar, GenericPathWithAUserBasicLockable) {
  CountingSpinLock lock;
  CondVar cv;
  bool ready = false;
  std::thread notifier([&] {
    lock.lock();
    ready = true;
    lock.unlock();
    cv.notify_all();  // generic waiters are woken, never requeued
  });
  lock.lock();
  cv.wait(lock, [&] { return ready; });
  EXPECT_TRUE(ready);
  // The predicate may have seen `ready` before the notifier's notify_all: let the notifier
  // finish, so that the timed wait below has nobody to wake it.
  lock.unlock();
  notifier.join();
  lock.lock();
  EXPECT_EQ(cv.wait_until(lock, Clock::now() + 1ms), std::cv_status::timeout);
  const int locks = lock.locks;
  const int unlocks = lock.unlocks;
  lock.unlock();
  EXPECT_EQ(locks, unlocks + 1);  // every unlock inside wait was matched by a relock
}

TEST(CondVar, GenericUseMakesNotifyAllWithAMutexWakeAll) {
  std::mutex std_mutex;
  Mutex mutex;
  CondVar cv;
  {
    std::unique_lock lock(std_mutex);
    (void)cv.wait_for(lock, 0ms);
  }
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    std::unique_lock lock(mutex);
    cv.wait(lock);
    done = true;
  });
  ASSERT_TRUE(eventually([&] { return cv.waiter_count() == 1; }));
  {
    std::lock_guard hold(mutex);
    cv.notify_all(mutex);
    EXPECT_EQ(cv.requeue_count(), 0u);  // tag is "mixed": never requeue again
  }
  waiter.join();
  EXPECT_TRUE(done);
}

// Token passing among threads: every notify_one must reach a waiter, or the round stalls.
TEST(CondVar, ProducerConsumerCountsEveryItemExactlyOnce) {
  Mutex mutex;
  CondVar not_empty;
  CondVar not_full;
  constexpr int kCapacity = 4;
  const int per_producer = static_cast<int>(test::scaled(5000));
  int items = 0;
  long long sum = 0;
  std::vector<std::thread> threads;
  for (int p = 0; p < 2; ++p) {
    threads.emplace_back([&] {
      for (int i = 1; i <= per_producer; ++i) {
        std::unique_lock lock(mutex);
        not_full.wait(lock, [&] { return items < kCapacity; });
        ++items;
        not_empty.notify_one();
      }
    });
  }
  long long consumed = 0;
  for (int c = 0; c < 2; ++c) {
    threads.emplace_back([&] {
      for (int i = 0; i < per_producer; ++i) {
        std::unique_lock lock(mutex);
        not_empty.wait(lock, [&] { return items > 0; });
        --items;
        ++consumed;
        sum += 1;
        not_full.notify_one();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(items, 0);
  EXPECT_EQ(consumed, 2LL * per_producer);
  EXPECT_EQ(sum, 2LL * per_producer);
}

}  // namespace
}  // namespace xproc::sync

namespace xproc::sync {
namespace {

// std::condition_variable's rule: destroying it is allowed once every waiter was notified, even
// before they returned from wait. ~CondVar() waits for woken waiters to leave; under ASan a
// waiter touching the freed condvar is a heap-use-after-free report.
template <class Notify>
void delete_right_after_notify(Notify notify) {
  const long rounds = test::scaled(300);
  for (long round = 0; round < rounds; ++round) {
    Mutex mutex;
    auto* cond = new CondVar();
    bool go = false;
    std::atomic<bool> waiting{false};
    std::thread waiter([&, cond] {
      std::unique_lock<Mutex> lock(mutex);
      waiting.store(true);
      while (!go) cond->wait(lock);
    });
    ASSERT_TRUE(eventually([&] { return waiting.load() && cond->waiter_count() == 1; }));
    {
      std::lock_guard<Mutex> lock(mutex);
      go = true;
      notify(*cond, mutex);
      delete cond;  // still holding the mutex: the waiter cannot have re-acquired yet
    }
    waiter.join();
  }
}

TEST(CondVar, MayBeDeletedRightAfterNotifyOne) {
  delete_right_after_notify([](CondVar& cond, Mutex&) { cond.notify_one(); });
}

TEST(CondVar, MayBeDeletedRightAfterRequeueingNotifyAll) {
  delete_right_after_notify([](CondVar& cond, Mutex& mutex) { cond.notify_all(mutex); });
}

}  // namespace
}  // namespace xproc::sync
