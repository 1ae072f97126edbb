// Crash injection for xproc::sync::CondVar over a robust process-shared Mutex: a waiter that
// was requeued onto the mutex word, then woken there by the unlock, is SIGKILLed before it
// runs. The kernel's robust-list pending-op rule (the waiter names the mutex in list_op_pending
// from its release in wait() until it re-acquires) passes that wake-up on to the next waiter
// on the word, so the survivor gets the mutex at once instead of after its
// CondVar::kRequeueRecheck slice.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <iostream>
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
  CondVar cv{Scope::process, CondVarOptions{.spin_rounds = 0}};
  int released = 0;  // protected by mutex
  int passed = 0;    // protected by mutex
  std::atomic<std::int64_t> survivor_acquired_ns{0};
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

char process_state(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() ? '?' : line[close + 2];
}

using test::eventually;

// Pins the calling process (and the children it forks) to one CPU for the test's duration.
class PinToOneCpu {
 public:
  PinToOneCpu() {
    ok_ = sched_getaffinity(0, sizeof(saved_), &saved_) == 0;
    cpu_set_t one;
    CPU_ZERO(&one);
    for (std::size_t cpu = 0; cpu < std::size_t{CPU_SETSIZE} && ok_; ++cpu) {
      if (CPU_ISSET(cpu, &saved_)) {
        CPU_SET(cpu, &one);
        break;
      }
    }
    ok_ = ok_ && sched_setaffinity(0, sizeof(one), &one) == 0;
  }
  ~PinToOneCpu() {
    if (ok_) (void)sched_setaffinity(0, sizeof(saved_), &saved_);
  }
  bool ok() const { return ok_; }

 private:
  cpu_set_t saved_{};
  bool ok_ = false;
};

int wait_then_pass(Shared& shared, bool survivor) {
  if (shared.mutex.acquire()) return 1;
  std::error_code ec = shared.cv.wait_for(shared.mutex, 20s, [&] { return shared.released == 1; });
  if (survivor) shared.survivor_acquired_ns.store(now_ns(), std::memory_order_relaxed);
  if (ec == errc::owner_died) {
    (void)shared.mutex.make_consistent();
    ec = shared.cv.wait_for(shared.mutex, 20s, [&] { return shared.released == 1; });
  }
  if (ec) return 3;
  ++shared.passed;
  return shared.mutex.release() ? 4 : 0;
}

// Every process runs on one CPU and the victim is SCHED_IDLE, so the victim woken by the
// unlock cannot run before the notifier kills it: it dies woken, not holding the mutex, with
// the survivor parked behind it on the word.
TEST(CondVarPendingCrash, RequeuedWaiterKilledAfterItsWakeUpPassesTheWakeUpOn) {
  PinToOneCpu pin;
  ASSERT_TRUE(pin.ok());
  const long rounds = test::scaled(5);
  std::vector<double> latencies_ms;
  int windows_hit = 0;
  for (long round = 0; round < rounds; ++round) {
    test::SharedObject<Shared> shared;
    // The survivor parks on seq_ first, so notify_all(m) wakes it and requeues the victim:
    // the victim is first on the mutex word.
    test::Child survivor = test::Child::start([&] { return wait_then_pass(*shared, true); });
    ASSERT_TRUE(eventually([&] { return shared->cv.waiter_count() == 1; }));
    ASSERT_TRUE(eventually([&] { return process_state(survivor.pid()) == 'S'; }));
    test::Child victim = test::Child::start([&] { return wait_then_pass(*shared, false); });
    ASSERT_TRUE(eventually([&] { return shared->cv.waiter_count() == 2; }));
    ASSERT_TRUE(eventually([&] { return process_state(victim.pid()) == 'S'; }));
    sched_param idle{};
    ASSERT_EQ(sched_setscheduler(victim.pid(), SCHED_IDLE, &idle), 0);

    ASSERT_FALSE(shared->mutex.acquire());
    shared->released = 1;
    shared->cv.notify_all(shared->mutex);  // wakes the survivor, requeues the victim
    ASSERT_EQ(shared->cv.requeue_count(), 1u);
    // The survivor woke up, found the mutex held and parked on its word behind the victim.
    ASSERT_TRUE(eventually([&] { return process_state(survivor.pid()) == 'S'; }));
    ASSERT_FALSE(shared->mutex.release());  // wakes the victim (first on the word)
    const std::int64_t killed_ns = now_ns();
    victim.kill(SIGKILL);

    const test::ChildStatus victim_status = victim.wait(30s);
    // Rarely the victim still gets the CPU first (another process preempts the notifier) and
    // finishes: that round does not hit the window, which windows_hit counts.
    EXPECT_TRUE(victim_status.signaled || victim_status.ok()) << victim_status.exit_code;
    const test::ChildStatus survivor_status = survivor.wait(30s);
    ASSERT_TRUE(survivor_status.ok()) << survivor_status.exit_code;
    ASSERT_FALSE(shared->mutex.acquire());  // the victim never held it: no owner_died
    const int passed = shared->passed;
    ASSERT_FALSE(shared->mutex.release());
    EXPECT_GE(passed, 1);
    if (passed == 1 && victim_status.signaled) ++windows_hit;  // died woken, before acquiring
    latencies_ms.push_back(static_cast<double>(shared->survivor_acquired_ns.load() - killed_ns) /
                           1e6);
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());
  std::cout << "windows hit " << windows_hit << "/" << rounds << "; survivor latency ms:";
  for (const double ms : latencies_ms) std::cout << ' ' << ms;
  std::cout << '\n';
  EXPECT_GE(windows_hit, 1);
  // Without the pending-op hand-over the survivor sleeps out its recheck slice (close to
  // kRequeueRecheck after the kill); with it, the kernel wakes it at the victim's death.
  ASSERT_FALSE(latencies_ms.empty());
  EXPECT_LT(latencies_ms.front(), static_cast<double>(CondVar::kRequeueRecheck.count()) / 2);
}

}  // namespace
}  // namespace xproc::sync
