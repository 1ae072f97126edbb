// Thread-level tests of xproc::sync::RwLock: exclusion, concurrency of readers, each policy's
// preference, the recursive-reader guarantee, timed operations and errors.

#include "xproc/sync/rw_lock.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "eventually.h"
#include "rw_policy_names.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

// Handshakes only: polls `ready` (yielding) for at most 10 s; never orders events by sleeping.
using test::eventually;

class RwLockPolicyTest : public ::testing::TestWithParam<RwPolicy> {};

INSTANTIATE_TEST_SUITE_P(AllPolicies, RwLockPolicyTest, test::kAllRwPolicies, test::rw_policy_name);

TEST(RwLock, ZeroFilledObjectIsAPhaseFairThreadScopeLock) {
  alignas(RwLock) unsigned char storage[sizeof(RwLock)];
  std::memset(storage, 0, sizeof storage);
  RwLock& lock = *std::launder(reinterpret_cast<RwLock*>(storage));
  EXPECT_EQ(lock.policy(), RwPolicy::phase_fair);
  EXPECT_EQ(lock.scope(), Scope::thread);
  EXPECT_EQ(RwLock{}.policy(), RwLock::kDefaultPolicy);
  lock.lock();
  EXPECT_FALSE(lock.try_lock_shared());
  lock.unlock();
  ASSERT_TRUE(lock.try_lock_shared());
  lock.unlock_shared();
}

TEST_P(RwLockPolicyTest, ConstructorRecordsScopeAndPolicy) {
  RwLock lock(Scope::process, GetParam());
  EXPECT_EQ(lock.scope(), Scope::process);
  EXPECT_EQ(lock.policy(), GetParam());
}

TEST_P(RwLockPolicyTest, WorksWithStdLockTypes) {
  RwLock lock(Scope::thread, GetParam());
  {
    std::unique_lock<RwLock> writer(lock);
    EXPECT_TRUE(lock.snapshot().writer_holds);
  }
  {
    std::shared_lock<RwLock> reader(lock);
    EXPECT_EQ(lock.snapshot().readers, 1u);
    std::unique_lock<RwLock> writer(lock, std::try_to_lock);
    EXPECT_FALSE(writer.owns_lock());
  }
  std::unique_lock<RwLock> timed(lock, 10ms);
  EXPECT_TRUE(timed.owns_lock());
  timed.unlock();
  std::shared_lock<RwLock> timed_reader(lock, Clock::now() + 10ms);
  EXPECT_TRUE(timed_reader.owns_lock());
}

TEST_P(RwLockPolicyTest, TwoReadersHoldTheLockAtTheSameTime) {
  RwLock lock(Scope::thread, GetParam());
  std::atomic<int> inside{0};
  auto reader = [&] {
    std::shared_lock<RwLock> hold(lock);
    inside.fetch_add(1);
    // Both must be inside together: each waits for the other while holding.
    EXPECT_TRUE(eventually([&] { return inside.load() == 2; }));
  };
  std::thread first(reader);
  std::thread second(reader);
  first.join();
  second.join();
  EXPECT_EQ(inside.load(), 2);
}

TEST_P(RwLockPolicyTest, WriterExcludesReadersAndWriters) {
  RwLock lock(Scope::thread, GetParam());
  lock.lock();
  std::thread other([&] {
    EXPECT_EQ(lock.try_acquire_shared(), errc::would_block);
    EXPECT_EQ(lock.try_acquire(), errc::would_block);
    EXPECT_FALSE(lock.try_lock_shared_for(1ms));
    EXPECT_FALSE(lock.try_lock_for(1ms));
  });
  other.join();
  lock.unlock();
  lock.lock_shared();
  std::thread writer([&] { EXPECT_FALSE(lock.try_lock()); });
  writer.join();
  lock.unlock_shared();
}

// The guarantee FreeBSD's libthr gives and writer-preferring locks elsewhere break: a thread that
// holds a read lock takes it again while a writer is parked waiting, and must not deadlock.
TEST_P(RwLockPolicyTest, RecursiveReadPassesAParkedWriter) {
  RwLock lock(Scope::thread, GetParam());
  lock.lock_shared();
  std::atomic<bool> writer_done{false};
  std::thread writer([&] {
    lock.lock();
    writer_done.store(true);
    lock.unlock();
  });
  ASSERT_TRUE(eventually([&] {
    const RwLockSnapshot view = lock.snapshot();
    return view.writer_staged && view.parked_drainers == 1;
  }));
  ASSERT_EQ(lock.try_acquire_shared(), std::error_code{});     // the recursive try form
  lock.lock_shared();                                          // the blocking form
  ASSERT_TRUE(lock.try_lock_shared_until(Clock::now() - 1s));  // even with a past deadline
  EXPECT_EQ(lock.snapshot().readers, 1u);                      // recursion touches no shared state
  EXPECT_FALSE(writer_done.load());
  lock.unlock_shared();
  lock.unlock_shared();
  lock.unlock_shared();
  EXPECT_FALSE(writer_done.load());
  lock.unlock_shared();
  writer.join();
  EXPECT_TRUE(writer_done.load());
}

TEST(RwLock, PreferWriterMakesANewReaderWaitForAWaitingWriter) {
  RwLock lock(Scope::thread, RwPolicy::prefer_writer);
  lock.lock_shared();
  std::atomic<bool> writer_done{false};
  std::thread writer([&] {
    lock.lock();
    writer_done.store(true);
    lock.unlock();
  });
  ASSERT_TRUE(eventually([&] { return lock.snapshot().parked_drainers == 1; }));
  std::atomic<bool> reader_saw_writer_done{false};
  std::atomic<bool> timed_attempts_done{false};
  std::thread reader([&] {
    EXPECT_FALSE(lock.try_lock_shared());
    EXPECT_FALSE(lock.try_lock_shared_for(2ms));
    timed_attempts_done.store(true);
    lock.lock_shared();
    reader_saw_writer_done.store(writer_done.load());
    lock.unlock_shared();
  });
  ASSERT_TRUE(eventually(
      [&] { return timed_attempts_done.load() && lock.snapshot().parked_readers == 1; }));
  lock.unlock_shared();
  writer.join();
  reader.join();
  EXPECT_TRUE(reader_saw_writer_done.load());
}

TEST(RwLock, PreferReaderLetsANewReaderPassAWaitingWriter) {
  RwLock lock(Scope::thread, RwPolicy::prefer_reader);
  lock.lock_shared();
  std::thread writer([&] {
    lock.lock();
    lock.unlock();
  });
  ASSERT_TRUE(eventually([&] { return lock.snapshot().parked_drainers == 1; }));
  std::thread reader([&] {
    ASSERT_TRUE(lock.try_lock_shared());
    EXPECT_EQ(lock.snapshot().readers, 2u);
    lock.unlock_shared();
  });
  reader.join();
  lock.unlock_shared();
  writer.join();
}

// Phase-fair order: reader R1 holds; writer W1 stages; reader R2 queues behind W1; writer W2
// waits for the stage. After R1 leaves: W1, then R2 (before W2, which came earlier than R2's
// phase ended), then W2.
TEST(RwLock, PhaseFairAlternatesReaderAndWriterPhases) {
  RwLock lock(Scope::thread, RwPolicy::phase_fair);
  std::mutex log_mutex;
  std::vector<std::string> log;
  auto note = [&](const char* what) {
    std::lock_guard<std::mutex> guard(log_mutex);
    log.emplace_back(what);
  };
  lock.lock_shared();
  std::thread w1([&] {
    lock.lock();
    note("W1");
    lock.unlock();
  });
  ASSERT_TRUE(eventually([&] { return lock.snapshot().parked_drainers == 1; }));
  std::thread r2([&] {
    lock.lock_shared();
    note("R2");
    lock.unlock_shared();
  });
  ASSERT_TRUE(eventually([&] {
    const RwLockSnapshot view = lock.snapshot();
    return view.queued_readers == 1 && view.parked_readers == 1;
  }));
  std::thread w2([&] {
    lock.lock();
    note("W2");
    lock.unlock();
  });
  ASSERT_TRUE(eventually([&] { return lock.snapshot().parked_writers == 1; }));
  EXPECT_EQ(lock.snapshot().readers, 1u);  // W1 waits only for R1, not for the queued R2
  lock.unlock_shared();
  w1.join();
  r2.join();
  w2.join();
  EXPECT_EQ(log, (std::vector<std::string>{"W1", "R2", "W2"}));
}

// Regression (nptl tst-rwlock15 port): a writer that times out while a reader holds the lock
// withdraws completely. A reader that waited behind it (phase_fair: queued for the next phase;
// prefer_writer: held back by the registration) gets in while the first reader is still inside,
// and so does a brand-new try-read. Retries with a longer writer timeout until the reader was
// seen parked while the writer still waited, so the queued path is really exercised.
TEST_P(RwLockPolicyTest, TimedOutWriterNeverStrandsQueuedReadersNorBlocksNewReaders) {
  RwLock lock(Scope::thread, GetParam());
  lock.lock_shared();
  bool exercised = false;
  for (auto writer_timeout = 50ms; !exercised && writer_timeout <= 3200ms; writer_timeout *= 2) {
    std::atomic<bool> writer_done{false};
    std::thread writer([&] {
      EXPECT_FALSE(lock.try_lock_for(writer_timeout));
      writer_done.store(true);
    });
    ASSERT_TRUE(eventually([&] { return lock.snapshot().parked_drainers == 1 || writer_done; }));
    std::atomic<bool> reader_in{false};
    std::atomic<bool> reader_may_leave{false};
    std::thread reader([&] {
      if (!lock.try_lock_shared_for(10s)) return;
      reader_in.store(true);
      while (!reader_may_leave.load()) std::this_thread::yield();
      lock.unlock_shared();
    });
    ASSERT_TRUE(eventually([&] { return lock.snapshot().parked_readers == 1 || reader_in; }));
    // prefer_reader lets the reader pass the waiting writer; the others make it wait.
    exercised = !writer_done.load();
    writer.join();
    // The writer is gone; the reader gets in while our read hold is still inside.
    EXPECT_TRUE(eventually([&] { return reader_in.load(); }));
    RwLockSnapshot view = lock.snapshot();
    EXPECT_EQ(view.readers, reader_in ? 2u : 1u);
    EXPECT_FALSE(view.writer_staged);
    EXPECT_EQ(view.queued_readers + view.queued_writers, 0u);
    std::thread newcomer([&] {
      EXPECT_TRUE(lock.try_lock_shared());  // nothing but readers hold or want the lock
      lock.unlock_shared();
    });
    newcomer.join();
    reader_may_leave.store(true);
    reader.join();
  }
  EXPECT_TRUE(exercised);
  const RwLockSnapshot view = lock.snapshot();
  EXPECT_EQ(view.readers, 1u);
  EXPECT_FALSE(view.writer_staged);
  lock.unlock_shared();
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
}

// phase_fair: after a withdrawal a new writer waits only for the readers inside (no leftover
// stage to adopt), and readers arriving behind it queue for the phase after it, as usual.
TEST(RwLock, PhaseFairWriterAfterATimedOutWriterGetsAFreshStage) {
  RwLock lock(Scope::thread, RwPolicy::phase_fair);
  lock.lock_shared();
  std::thread timed_out([&] { EXPECT_FALSE(lock.try_lock_for(2ms)); });
  timed_out.join();
  ASSERT_FALSE(lock.snapshot().writer_staged);
  std::atomic<bool> writer_in{false};
  std::thread writer([&] {
    lock.lock();
    writer_in.store(true);
    lock.unlock();
  });
  ASSERT_TRUE(eventually([&] {
    const RwLockSnapshot view = lock.snapshot();
    return view.writer_staged && view.parked_drainers == 1;
  }));
  std::thread late_reader([&] {
    EXPECT_FALSE(lock.try_lock_shared());  // behind the staged writer
    lock.lock_shared();
    EXPECT_TRUE(writer_in.load());  // entered in the phase after the writer's
    lock.unlock_shared();
  });
  ASSERT_TRUE(eventually([&] { return lock.snapshot().queued_readers == 1; }));
  EXPECT_FALSE(writer_in.load());
  lock.unlock_shared();
  writer.join();
  late_reader.join();
  EXPECT_TRUE(writer_in.load());
  const RwLockSnapshot view = lock.snapshot();
  EXPECT_EQ(view.readers, 0u);
  EXPECT_FALSE(view.writer_staged);
  EXPECT_EQ(view.queued_readers, 0u);
}

TEST(RwLock, PreferWriterTimedOutWriterReleasesWaitingReaders) {
  RwLock lock(Scope::thread, RwPolicy::prefer_writer);
  lock.lock_shared();
  std::thread writer([&] { EXPECT_FALSE(lock.try_lock_for(5ms)); });
  writer.join();
  const RwLockSnapshot view = lock.snapshot();
  EXPECT_EQ(view.queued_writers, 0u);
  EXPECT_FALSE(view.writer_staged);
  std::thread reader([&] {
    EXPECT_TRUE(lock.try_lock_shared());
    lock.unlock_shared();
  });
  reader.join();
  lock.unlock_shared();
}

TEST_P(RwLockPolicyTest, TimedOperationsHonourPastNearAndFarDeadlines) {
  RwLock lock(Scope::thread, GetParam());
  lock.lock();
  std::thread other([&] {
    EXPECT_EQ(lock.acquire_until(Clock::now() - 1s), errc::timed_out);
    EXPECT_EQ(lock.acquire_shared_until(Clock::now() - 1s), errc::timed_out);
    auto start = Clock::now();
    EXPECT_EQ(lock.acquire_until(start + 20ms), errc::timed_out);
    EXPECT_GE(Clock::now() - start, 20ms);
    start = Clock::now();
    EXPECT_EQ(lock.acquire_shared_until(start + 20ms), errc::timed_out);
    EXPECT_GE(Clock::now() - start, 20ms);
    EXPECT_FALSE(lock.try_lock_until(std::chrono::system_clock::now() + 1ms));
  });
  other.join();
  // Far deadlines: the holder releases after the waiter has parked.
  std::atomic<bool> got{false};
  std::thread far_reader([&] {
    EXPECT_TRUE(lock.try_lock_shared_for(std::chrono::hours(1)));
    got.store(true);
    lock.unlock_shared();
  });
  ASSERT_TRUE(eventually([&] { return lock.snapshot().parked_readers == 1; }));
  lock.unlock();
  far_reader.join();
  EXPECT_TRUE(got.load());
  lock.lock_shared();
  std::thread far_writer([&] {
    EXPECT_TRUE(lock.try_lock_until(Clock::now() + 3600s));
    lock.unlock();
  });
  ASSERT_TRUE(eventually([&] { return lock.snapshot().parked_drainers == 1; }));
  lock.unlock_shared();
  far_writer.join();
  EXPECT_TRUE(lock.try_lock_for(std::chrono::nanoseconds::max()));
  lock.unlock();
}

TEST_P(RwLockPolicyTest, UpgradeReturnsDeadlockInsteadOfHanging) {
  RwLock lock(Scope::thread, GetParam());
  lock.lock_shared();
  EXPECT_EQ(lock.acquire(), errc::deadlock);
  EXPECT_EQ(lock.acquire_until(Clock::now() + 1h), errc::deadlock);
  EXPECT_EQ(lock.try_acquire(), errc::would_block);  // a try form only says it would wait
  EXPECT_FALSE(lock.try_lock());
  EXPECT_THROW(lock.lock(), std::system_error);
  lock.unlock_shared();
}

TEST_P(RwLockPolicyTest, ReleaseWithoutAHoldReturnsNotOwner) {
  RwLock lock(Scope::thread, GetParam());
  EXPECT_EQ(lock.release_shared(), errc::not_owner);
  EXPECT_EQ(lock.release(), errc::not_owner);
  lock.lock_shared();
  EXPECT_EQ(lock.release(), errc::not_owner);
  std::thread other([&] { EXPECT_EQ(lock.release_shared(), errc::not_owner); });
  other.join();
  EXPECT_EQ(lock.release_shared(), std::error_code{});
}

TEST(RwLock, ReadHoldsOnTooManyLocksReturnLimitReached) {
  std::vector<std::unique_ptr<RwLock>> locks;
  for (std::size_t i = 0; i <= RwLock::kMaxReadLocksPerThread; ++i) {
    locks.push_back(std::make_unique<RwLock>());
  }
  for (std::size_t i = 0; i < RwLock::kMaxReadLocksPerThread; ++i) {
    ASSERT_EQ(locks[i]->acquire_shared(), std::error_code{});
  }
  EXPECT_EQ(locks.back()->acquire_shared(), errc::limit_reached);
  EXPECT_THROW(locks.back()->lock_shared(), std::system_error);
  EXPECT_EQ(locks.front()->acquire_shared(), std::error_code{});  // recursion still works
  EXPECT_EQ(locks.front()->release_shared(), std::error_code{});
  ASSERT_EQ(locks.front()->release_shared(), std::error_code{});
  EXPECT_EQ(locks.back()->acquire_shared(), std::error_code{});  // a slot is free again
  ASSERT_EQ(locks.back()->release_shared(), std::error_code{});
  for (std::size_t i = 1; i < RwLock::kMaxReadLocksPerThread; ++i) {
    ASSERT_EQ(locks[i]->release_shared(), std::error_code{});
  }
}

// Many threads, random mix of (recursive) reads, writes and timed forms: nobody is ever inside
// with a writer, and every write is counted exactly once.
TEST_P(RwLockPolicyTest, StressKeepsExclusionInvariants) {
  RwLock lock(Scope::thread, GetParam());
  std::atomic<int> readers_inside{0};
  std::atomic<int> writers_inside{0};
  long protected_counter = 0;  // written only under the write lock (TSan checks the annotations)
  std::atomic<long> writes{0};
  std::atomic<int> violations{0};
  const long iterations = test::scaled(8000);
  auto body = [&](unsigned seed) {
    std::minstd_rand random(seed);
    for (long i = 0; i < iterations; ++i) {
      const unsigned choice = random() % 8;
      if (choice < 2) {
        const bool timed = choice == 1;
        if (timed ? !lock.try_lock_for(1ms) : (lock.lock(), false)) continue;
        if (writers_inside.fetch_add(1) != 0 || readers_inside.load() != 0) violations++;
        ++protected_counter;
        writes.fetch_add(1);
        if (i % 16 == 0) std::this_thread::yield();  // let the others queue and park
        writers_inside.fetch_sub(1);
        lock.unlock();
      } else {
        const bool timed = choice == 7;
        if (timed ? !lock.try_lock_shared_for(1ms) : (lock.lock_shared(), false)) continue;
        readers_inside.fetch_add(1);
        if (writers_inside.load() != 0) violations++;
        [[maybe_unused]] volatile long seen = protected_counter;
        if (i % 32 == 0) std::this_thread::yield();
        if (choice == 6) {  // recursive hold
          lock.lock_shared();
          if (writers_inside.load() != 0) violations++;
          lock.unlock_shared();
        }
        readers_inside.fetch_sub(1);
        lock.unlock_shared();
      }
    }
  };
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 4; ++t) threads.emplace_back(body, t + 1);
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(violations.load(), 0);
  EXPECT_EQ(protected_counter, writes.load());
  const RwLockSnapshot view = lock.snapshot();
  EXPECT_EQ(view.readers, 0u);
  EXPECT_FALSE(view.writer_staged);
  EXPECT_EQ(view.queued_readers + view.queued_writers, 0u);
}

}  // namespace
}  // namespace xproc::sync
