// Crash tests of segments: a process that creates, opens and drops named segments (with
// unlink-when-last-detaches) in a loop is SIGKILLed at an arbitrary instant: inside create
// (before or after the name appears), inside open (holding the gc byte or not), inside the last
// detach (holding the gc byte exclusively, before or after the unlink). Whatever the instant:
// every name it left is a complete, valid segment (names appear only when ready), opening it
// never hangs, the segment reads stale (the kernel dropped every lock byte), and remove_stale()
// removes it.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <random>
#include <string>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/shm/segment.h"
#include "xproc/shm/segment_registry.h"
#include "xproc/sys/error.h"

namespace xproc::shm {
namespace {

using namespace std::chrono_literals;

constexpr int kNames = 3;

struct Shared {
  std::atomic<long> loops{0};
  std::atomic<int> failures{0};
};

bool wait_until_zombie(pid_t pid) {
  siginfo_t info{};
  for (;;) {
    if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) == 0) return true;
    if (errno != EINTR) return false;
  }
}

// The test process's pid (not the victim's) makes the names unique.
std::string name_of(pid_t test_pid, long round, int index) {
  return "crash." + std::to_string(test_pid) + "." + std::to_string(round) + "." +
         std::to_string(index);
}

TEST(SegmentCrash, ACreatorOrDetacherKilledAtAnyInstantLeavesOnlyValidStaleRemovableNames) {
  const pid_t test_pid = getpid();
  std::mt19937 random(20261123);  // fixed: the same instants (modulo scheduling) every run
  const long rounds = test::scaled(20);
  int left_behind = 0;  // names the victim left (reported: the test must exercise them)
  for (long round = 0; round < rounds; ++round) {
    SCOPED_TRACE(round);
    test::SharedObject<Shared> shared;
    SegmentOptions options;
    options.unlink_when_last_detaches = true;
    options.if_exists = IfExists::open;
    auto victim = test::Child::start([&] {
      for (long i = 0;; ++i) {
        std::string name = name_of(test_pid, round, static_cast<int>(i % kNames));
        auto first = Segment::create(name, SegmentKind::raw, 4096, options);
        auto second = Segment::open(name, SegmentKind::raw);
        if (!first || !second) shared->failures.fetch_add(1);
        shared->loops.fetch_add(1, std::memory_order_relaxed);
      }
      return 0;
    });
    // Kill after a random amount of progress (a handshake on the victim's counter, no sleeps).
    long target = std::uniform_int_distribution<long>(1, 200)(random);
    while (shared->loops.load(std::memory_order_relaxed) < target) sched_yield();
    victim.kill(SIGKILL);
    ASSERT_TRUE(wait_until_zombie(victim.pid()));  // a zombie: its locks are gone already
    EXPECT_EQ(shared->failures.load(), 0);

    for (int index = 0; index < kNames; ++index) {
      std::string name = name_of(test_pid, round, index);
      Result<bool> stale = is_stale(name);
      if (!stale) {
        ASSERT_EQ(stale.error(), errc::not_found) << name;
        continue;
      }
      EXPECT_TRUE(*stale) << name;  // the only participant is dead
      ++left_behind;
      if ((round + index) % 2 == 0) {
        EXPECT_TRUE(remove_stale(name).value()) << name;
      } else {
        SegmentOptions quick;
        quick.ready_timeout = 1s;
        auto opened = Segment::open(name, SegmentKind::raw, quick);
        ASSERT_TRUE(opened) << name << ": " << opened.error().message();  // complete and valid
        EXPECT_EQ(opened->body_size(), 4096u);
        opened = std::error_code(errc::invalid_argument);  // we were the last: unlinks
      }
      EXPECT_EQ(Segment::open(name, SegmentKind::raw).error(), errc::not_found) << name;
    }
    EXPECT_TRUE(victim.wait(10s).signaled);
  }
  RecordProperty("names_left_behind", left_behind);
  EXPECT_GT(left_behind, 0);
}

}  // namespace
}  // namespace xproc::shm
