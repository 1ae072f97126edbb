// Crash injection for xproc::sync::CondVar: SIGKILL a waiter or a notifier at chosen and random
// instants; the survivors must keep working (a notify still reaches a live waiter, the mutex
// is usable, requeued waiters all get through), never block forever.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "eventually.h"
#include "shared_object.h"
#include "xproc/sync/cond_var.h"
#include "xproc/sync/mutex.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

struct Shared {
  Mutex mutex{Scope::process};
  CondVar cv{Scope::process};
  int flag = 0;      // protected by mutex
  int released = 0;  // protected by mutex
  int passed = 0;    // protected by mutex
};

char process_state(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() ? '?' : line[close + 2];
}

using test::eventually;

// Locks, accepting a dead previous owner (the data here needs no repair).
void lock_repairing(Mutex& mutex) {
  const std::error_code ec = mutex.acquire();
  if (ec == errc::owner_died) {
    ASSERT_FALSE(mutex.make_consistent());
    return;
  }
  ASSERT_FALSE(ec) << ec.message();
}

// A live waiter in this process must be reached by one notify_one, whatever the dead left.
void expect_a_live_waiter_is_woken_by_notify_one(Shared& shared) {
  std::atomic<bool> done{false};
  std::atomic<bool> waiting{false};
  std::thread waiter([&] {
    lock_repairing(shared.mutex);
    shared.flag = 0;
    waiting = true;
    const std::error_code ec =
        shared.cv.wait_for(shared.mutex, 10s, [&] { return shared.flag == 1; });
    EXPECT_FALSE(ec) << ec.message();
    done = !ec;
    (void)shared.mutex.release();
  });
  ASSERT_TRUE(eventually([&] { return waiting.load(); }));
  {
    lock_repairing(shared.mutex);  // the waiter released it inside wait
    shared.flag = 1;
    shared.cv.notify_one();
    ASSERT_FALSE(shared.mutex.release());
  }
  waiter.join();
  EXPECT_TRUE(done.load());
}

TEST(CondVarCrash, WaiterKilledWhileParkedOnlyLeavesASpareCountAndNotifiesStillArrive) {
  test::SharedObject<Shared> shared;
  test::Child victim = test::Child::start([&] {
    if (shared->mutex.acquire()) return 1;
    (void)shared->cv.wait(shared->mutex);  // killed in here
    return 2;
  });
  ASSERT_TRUE(eventually(
      [&] { return shared->cv.waiter_count() == 1 && process_state(victim.pid()) == 'S'; }));
  victim.kill(SIGKILL);
  const test::ChildStatus status = victim.wait(10s);
  EXPECT_TRUE(status.signaled);
  // The dead waiter stays counted (a spare futex_wake per notify, nothing worse), the mutex it
  // released inside wait is free, not owner-died.
  EXPECT_EQ(shared->cv.waiter_count(), 1u);
  ASSERT_FALSE(shared->mutex.acquire());
  ASSERT_FALSE(shared->mutex.release());
  expect_a_live_waiter_is_woken_by_notify_one(*shared);
  EXPECT_EQ(shared->cv.waiter_count(), 1u);
}

// A victim process waits and notifies in a loop (timed waits, notify_one, notify_all with
// requeue, under the mutex); it is killed at a random instant. The survivors then use the same
// mutex and condvar: locking works (owner_died repaired when it died holding it) and a notify
// reaches a live waiter.
TEST(CondVarCrash, ParticipantKilledAtARandomInstantOfWaitOrNotifyNeverBlocksSurvivors) {
  std::mt19937 random(12345);
  const long rounds = test::scaled(20);
  for (long round = 0; round < rounds; ++round) {
    test::SharedObject<Shared> shared;
    test::Child victim = test::Child::start([&] {
      for (long i = 0;; ++i) {
        const std::error_code ec = shared->mutex.acquire();
        if (ec == errc::owner_died) (void)shared->mutex.make_consistent();
        if (shared->cv.wait_for(shared->mutex, std::chrono::microseconds(i % 50)) ==
            errc::owner_died) {
          (void)shared->mutex.make_consistent();
        }
        shared->cv.notify_one();
        shared->cv.notify_all(shared->mutex);
        (void)shared->mutex.release();
        shared->cv.notify_all();
      }
      return 0;
    });
    // A survivor thread waits and notifies alongside it meanwhile (timed, so it ends).
    std::atomic<bool> stop{false};
    std::thread peer([&] {
      while (!stop) {
        lock_repairing(shared->mutex);
        if (shared->cv.wait_for(shared->mutex, 200us) == errc::owner_died) {
          ASSERT_FALSE(shared->mutex.make_consistent());  // re-acquired after the victim died
        }
        shared->cv.notify_one();
        (void)shared->mutex.release();
      }
    });
    std::this_thread::sleep_for(std::chrono::microseconds(random() % 3000));  // random instant
    victim.kill(SIGKILL);
    const test::ChildStatus status = victim.wait(10s);
    EXPECT_TRUE(status.signaled);
    stop = true;
    peer.join();
    expect_a_live_waiter_is_woken_by_notify_one(*shared);
    if (HasFailure()) break;
  }
}

// Waiters of several processes are requeued onto the mutex word; one of them is killed at a
// random instant after the broadcast (parked on the word, woken and about to acquire, or
// holding the mutex). Every survivor still gets through: the kernel's robust list reports a
// dead holder, and a waiter stranded on the word by a dead wakee re-checks every
// CondVar::kRequeueRecheck.
TEST(CondVarCrash, KillingARequeuedWaiterLetsTheOtherRequeuedWaitersThrough) {
  constexpr int kChildren = 4;
  std::mt19937 random(777);
  const long rounds = test::scaled(10);
  for (long round = 0; round < rounds; ++round) {
    test::SharedObject<Shared> shared;
    std::vector<test::Child> children;
    for (int c = 0; c < kChildren; ++c) {
      children.push_back(test::Child::start([&] {
        if (shared->mutex.acquire()) return 1;
        std::error_code ec =
            shared->cv.wait_for(shared->mutex, 20s, [&] { return shared->released == 1; });
        if (ec == errc::owner_died) {
          (void)shared->mutex.make_consistent();
          ec = shared->cv.wait_for(shared->mutex, 20s, [&] { return shared->released == 1; });
        }
        if (ec) return 3;
        ++shared->passed;
        std::this_thread::sleep_for(std::chrono::microseconds(100));  // hold it a little
        return shared->mutex.release() ? 4 : 0;
      }));
    }
    ASSERT_TRUE(eventually([&] { return shared->cv.waiter_count() == kChildren; }));
    ASSERT_TRUE(eventually([&] {
      for (auto& child : children) {
        if (process_state(child.pid()) != 'S') return false;
      }
      return true;
    }));
    lock_repairing(shared->mutex);
    shared->released = 1;
    shared->cv.notify_all(shared->mutex);
    EXPECT_EQ(shared->cv.requeue_count(), 1u);
    ASSERT_FALSE(shared->mutex.release());
    std::this_thread::sleep_for(std::chrono::microseconds(random() % 400));  // random instant
    const std::size_t victim = random() % kChildren;
    children[victim].kill(SIGKILL);
    int finished = 0;
    for (std::size_t c = 0; c < children.size(); ++c) {
      const test::ChildStatus status = children[c].wait(30s);
      if (c == victim) {
        EXPECT_TRUE(status.signaled || status.ok()) << status.exit_code;
      } else {
        EXPECT_TRUE(status.ok()) << "survivor " << c << " exit " << status.exit_code;
        if (status.ok()) ++finished;
      }
    }
    EXPECT_EQ(finished, kChildren - 1);
    lock_repairing(shared->mutex);
    EXPECT_GE(shared->passed, kChildren - 1);
    ASSERT_FALSE(shared->mutex.release());
    if (HasFailure()) break;
  }
}

}  // namespace
}  // namespace xproc::sync
