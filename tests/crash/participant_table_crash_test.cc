// Crash tests of the participant table: a process that attaches and detaches in a loop is
// SIGKILLed at an arbitrary instant (before its lock, between lock and generation bump, attached,
// inside detach). Whatever the instant, once it is dead every id it ever had reads dead, no slot
// stays held, no slot word is corrupt, and the table keeps serving new attachers.
#include <signal.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <random>
#include <thread>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/detail/liveness.h"
#include "xproc/sync/participant_table.h"
#include "xproc/sys/error.h"
#include "xproc/sys/file.h"
#include "xproc/sys/memory.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kCapacity = 4;
constexpr int kRecorded = 64;

struct Shared {
  std::atomic<int> attaches{0};                      // completed by the victim
  std::atomic<std::uint32_t> recorded[kRecorded]{};  // packed ids the victim obtained
  std::atomic<int> failures{0};
};

bool wait_until_zombie(pid_t pid) {
  siginfo_t info{};
  for (;;) {
    if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) == 0) return true;
    if (errno != EINTR) return false;
  }
}

TEST(ParticipantTableCrash, AttacherKilledAtAnyInstantLeavesNothingHeldAndNothingCorrupt) {
  const std::size_t size = ParticipantTable::size_for(kCapacity);
  sys::FileDescriptor file = sys::create_memory_file("participant_table_crash_test", size).value();
  sys::SharedMapping mapping = sys::SharedMapping::of_file(file.get(), size).value();
  ParticipantTable* table = ParticipantTable::create(mapping.data(), size, kCapacity).value();
  Participant observer = Participant::attach(*table, file.get()).value();
  const detail::OwnerRecord observer_record = detail::this_process_owner_record();

  std::mt19937 random(20261123);  // fixed: the same instants (modulo scheduling) every run
  const long rounds = test::scaled(20);
  for (long round = 0; round < rounds; ++round) {
    SCOPED_TRACE(round);
    test::SharedObject<Shared> shared;
    test::Child victim = test::Child::start([&]() -> int {
      for (int i = 0;; ++i) {
        // Two attachments at a time, so deaths also hit a process holding two slots.
        Result<Participant> first = Participant::attach(*table, file.get());
        Result<Participant> second = Participant::attach(*table, file.get());
        if (!first || !second) {
          shared->failures.fetch_add(1);
          continue;
        }
        shared->recorded[(2 * i) % kRecorded].store(first->id().pack());
        shared->recorded[(2 * i + 1) % kRecorded].store(second->id().pack());
        shared->attaches.fetch_add(2);
        if (first->detach()) shared->failures.fetch_add(1);
        // second detaches in its destructor
      }
    });
    const int wanted = std::uniform_int_distribution<int>(1, 200)(random);
    const auto deadline = Clock::now() + 10s;
    while (shared->attaches.load() < wanted && Clock::now() < deadline) std::this_thread::yield();
    ASSERT_GE(shared->attaches.load(), wanted);
    victim.kill(SIGKILL);
    ASSERT_TRUE(wait_until_zombie(victim.pid()));

    EXPECT_EQ(shared->failures.load(), 0);
    for (const auto& recorded : shared->recorded) {
      ParticipantId id = ParticipantId::unpack(recorded.load());
      if (!id.valid()) continue;
      EXPECT_FALSE(observer.is_alive(id).value()) << id.slot << "/" << id.generation;
      EXPECT_TRUE(detail::owner_known_dead({table->tag(), id.pack()}));
    }
    int alive_slots = 0;
    EXPECT_FALSE(
        observer.for_each_participant([&](ParticipantId, bool alive) { alive_slots += alive; }));
    EXPECT_EQ(alive_slots, 1);  // the observer only
    EXPECT_FALSE(detail::owner_known_dead(observer_record));

    // Every other slot is free again.
    Participant a = Participant::attach(*table, file.get()).value();
    Participant b = Participant::attach(*table, file.get()).value();
    Participant c = Participant::attach(*table, file.get()).value();
    EXPECT_EQ(Participant::attach(*table, file.get()).error(), errc::limit_reached);
    EXPECT_TRUE(victim.wait(10s).signaled);
  }
}

}  // namespace
}  // namespace xproc::sync
