// ParticipantTable across processes: a killed participant reads dead (zombies too), a live one
// alive, a reused slot does not resurrect the old id, a fork child does not keep its parent
// alive, exec drops the attachment, and owner_known_dead answers from this process's registry.
#include "xproc/sync/participant_table.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <utility>
#include <vector>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/detail/liveness.h"
#include "xproc/sys/error.h"
#include "xproc/sys/file.h"
#include "xproc/sys/memory.h"
#include "xproc/sys/shared_memory.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Handshake and results between the test and its children.
struct Shared {
  std::atomic<int> stage{0};
  std::atomic<std::uint32_t> packed_id{0};
  std::atomic<pid_t> grandchild{0};
  std::atomic<int> child_checks{0};  // bit set by a child for each check that held
};

bool wait_for(const std::atomic<int>& flag, int value, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = Clock::now() + timeout;
  while (flag.load() < value) {
    if (Clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

// Blocks until `pid` (a child) has exited, without reaping it: it stays a zombie.
bool wait_until_zombie(pid_t pid) {
  siginfo_t info{};
  for (;;) {
    if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) == 0) return true;
    if (errno != EINTR) return false;
  }
}

// Polls a liveness answer until it turns false (the kernel releases a lock as part of exit or
// exec, which the test observes from outside); false if it did not within `timeout`.
template <class Alive>
bool becomes_dead(Alive alive, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = Clock::now() + timeout;
  while (alive()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

bool alive_or_false(const Result<bool>& alive) {
  return alive.has_value() && *alive;
}

[[noreturn]] void sleep_until_killed() {
  for (;;) pause();
}

struct TableFile {
  explicit TableFile(std::uint32_t capacity)
      : file(sys::create_memory_file("participant_table_process_test",
                                     ParticipantTable::size_for(capacity))
                 .value()),
        mapping(
            sys::SharedMapping::of_file(file.get(), ParticipantTable::size_for(capacity)).value()),
        table(ParticipantTable::create(mapping.data(), mapping.size(), capacity).value()) {}

  Result<Participant> attach() { return Participant::attach(*table, file.get()); }

  sys::FileDescriptor file;
  sys::SharedMapping mapping;
  ParticipantTable* table;
};

// A child that attaches, reports its id, and sleeps until killed.
test::Child start_sleeping_participant(TableFile& t, Shared& shared) {
  return test::Child::start([&]() -> int {
    Result<Participant> me = t.attach();
    if (!me) return 1;
    shared.packed_id.store(me->id().pack());
    shared.stage.store(1);
    sleep_until_killed();
  });
}

TEST(ParticipantProcess, SigkilledChildReadsDeadAlreadyAsAZombie) {
  TableFile t(8);
  test::SharedObject<Shared> shared;
  Participant observer = t.attach().value();
  test::Child child = start_sleeping_participant(t, *shared);
  ASSERT_TRUE(wait_for(shared->stage, 1));
  ParticipantId id = ParticipantId::unpack(shared->packed_id.load());
  detail::OwnerRecord record{t.table->tag(), id.pack()};
  EXPECT_TRUE(observer.is_alive(id).value());
  EXPECT_FALSE(detail::owner_known_dead(record));

  child.kill(SIGKILL);
  ASSERT_TRUE(wait_until_zombie(child.pid()));  // exited, not reaped
  EXPECT_FALSE(observer.is_alive(id).value());
  EXPECT_TRUE(detail::owner_known_dead(record));
  test::ChildStatus status = child.wait();
  EXPECT_TRUE(status.signaled);
  EXPECT_FALSE(observer.is_alive(id).value());
}

TEST(ParticipantProcess, LiveChildReadsAliveUntilItDetaches) {
  TableFile t(8);
  test::SharedObject<Shared> shared;
  Participant observer = t.attach().value();
  const ParticipantId observer_id = observer.id();
  test::Child child = test::Child::start([&]() -> int {
    Result<Participant> me = t.attach();
    if (!me) return 1;
    // The child sees the parent alive through its own description.
    if (!alive_or_false(me->is_alive(observer_id))) return 2;
    shared->packed_id.store(me->id().pack());
    shared->stage.store(1);
    if (!wait_for(shared->stage, 2)) return 3;
    if (me->detach()) return 4;
    shared->stage.store(3);
    if (!wait_for(shared->stage, 4)) return 5;
    return 0;
  });
  ASSERT_TRUE(wait_for(shared->stage, 1));
  ParticipantId id = ParticipantId::unpack(shared->packed_id.load());
  EXPECT_NE(id.slot, observer.id().slot);
  EXPECT_TRUE(observer.is_alive(id).value());
  EXPECT_FALSE(detail::owner_known_dead({t.table->tag(), id.pack()}));
  shared->stage.store(2);
  ASSERT_TRUE(wait_for(shared->stage, 3));
  EXPECT_FALSE(observer.is_alive(id).value());  // detached, the process still runs
  EXPECT_TRUE(detail::owner_known_dead({t.table->tag(), id.pack()}));
  shared->stage.store(4);
  EXPECT_TRUE(child.wait().ok());
}

TEST(ParticipantProcess, SlotReusedByANewProcessLeavesTheOldIdDeadAndTheNewAlive) {
  TableFile t(8);
  Participant observer = t.attach().value();
  test::SharedObject<Shared> first_shared;
  test::Child first = start_sleeping_participant(t, *first_shared);
  ASSERT_TRUE(wait_for(first_shared->stage, 1));
  ParticipantId old_id = ParticipantId::unpack(first_shared->packed_id.load());
  first.kill(SIGKILL);
  EXPECT_TRUE(first.wait().signaled);

  test::SharedObject<Shared> second_shared;
  test::Child second = start_sleeping_participant(t, *second_shared);
  ASSERT_TRUE(wait_for(second_shared->stage, 1));
  ParticipantId new_id = ParticipantId::unpack(second_shared->packed_id.load());
  EXPECT_EQ(new_id.slot, old_id.slot);  // the first free slot: the dead one's
  EXPECT_EQ(new_id.generation, old_id.generation + 1);
  EXPECT_FALSE(observer.is_alive(old_id).value());
  EXPECT_TRUE(observer.is_alive(new_id).value());
  EXPECT_TRUE(detail::owner_known_dead({t.table->tag(), old_id.pack()}));
  EXPECT_FALSE(detail::owner_known_dead({t.table->tag(), new_id.pack()}));

  std::vector<std::pair<ParticipantId, bool>> seen;
  EXPECT_FALSE(observer.for_each_participant(
      [&](ParticipantId id, bool alive) { seen.emplace_back(id, alive); }));
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], std::make_pair(observer.id(), true));
  EXPECT_EQ(seen[1], std::make_pair(new_id, true));

  second.kill(SIGKILL);
  EXPECT_TRUE(second.wait().signaled);
  seen.clear();
  EXPECT_FALSE(observer.for_each_participant(
      [&](ParticipantId id, bool alive) { seen.emplace_back(id, alive); }));
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1], std::make_pair(new_id, false));
}

// Child A attaches and forks grandchild B, which inherits A's descriptors and sleeps. Killing A
// must make A read dead although B still runs: the atfork handler closed B's copies.
TEST(ParticipantProcess, ForkChildDoesNotKeepItsDeadParentAlive) {
  TableFile t(8);
  test::SharedObject<Shared> shared;
  Participant observer = t.attach().value();
  test::Child a = test::Child::start([&]() -> int {
    Result<Participant> me = t.attach();
    if (!me) return 1;
    shared->packed_id.store(me->id().pack());
    pid_t b = fork();
    if (b < 0) return 2;
    if (b == 0) {
      // The inherited Participant is detached here; this process is nobody until it attaches.
      int checks = 0;
      if (!me->attached() && me->id() == ParticipantId{}) checks |= 1;
      detail::OwnerRecord record = detail::this_process_owner_record();
      if (record.table_tag == 0 && record.participant == 0) checks |= 2;
      if (me->is_alive(ParticipantId{0, 1}).error() == errc::invalid_argument) checks |= 4;
      shared->child_checks.store(checks);
      shared->stage.store(1);
      sleep_until_killed();
    }
    shared->grandchild.store(b);
    if (!wait_for(shared->stage, 1)) return 3;
    shared->stage.store(2);
    sleep_until_killed();
  });
  ASSERT_TRUE(wait_for(shared->stage, 2));
  pid_t b = shared->grandchild.load();
  ParticipantId a_id = ParticipantId::unpack(shared->packed_id.load());
  EXPECT_EQ(shared->child_checks.load(), 7);
  EXPECT_TRUE(observer.is_alive(a_id).value());

  a.kill(SIGKILL);
  ASSERT_TRUE(wait_until_zombie(a.pid()));
  EXPECT_EQ(kill(b, 0), 0);  // B still runs, holding A's inherited descriptors no longer
  EXPECT_FALSE(observer.is_alive(a_id).value());
  EXPECT_TRUE(detail::owner_known_dead({t.table->tag(), a_id.pack()}));
  kill(b, SIGKILL);
  EXPECT_TRUE(a.wait().signaled);
}

TEST(ParticipantProcess, ForkChildAttachesItselfAndItsCopyClosesNothingOfItsOwn) {
  TableFile t(8);
  test::SharedObject<Shared> shared;
  Participant parent = t.attach().value();
  test::Child child = test::Child::start([&]() -> int {
    // The child handler closed the inherited attachment descriptor; a new descriptor may get
    // its number. Destroying the stale copy must not close it.
    sys::FileDescriptor fresh = sys::create_memory_file("fresh", 16).value();
    { Participant stale = std::move(parent); }
    if (fcntl(fresh.get(), F_GETFD) < 0) return 1;
    Result<Participant> me = t.attach();
    if (!me) return 2;
    if (me->id().slot == 0) return 3;  // the parent's slot is still held by the parent
    if (!alive_or_false(me->is_alive(ParticipantId{0, 1}))) return 4;  // the parent
    detail::OwnerRecord record = detail::this_process_owner_record();
    if (record.table_tag != t.table->tag() || record.participant != me->id().pack()) return 5;
    return 0;
  });
  EXPECT_TRUE(child.wait().ok());
  EXPECT_TRUE(parent.attached());
  EXPECT_EQ(parent.id(), (ParticipantId{0, 1}));
}

TEST(ParticipantProcess, ExecDropsTheAttachment) {
  TableFile t(8);
  test::SharedObject<Shared> shared;
  Participant observer = t.attach().value();
  test::Child child = test::Child::start([&]() -> int {
    Result<Participant> me = t.attach();
    if (!me) return 1;
    shared->packed_id.store(me->id().pack());
    shared->stage.store(1);
    execl("/bin/sleep", "sleep", "60", static_cast<char*>(nullptr));
    return 2;
  });
  ASSERT_TRUE(wait_for(shared->stage, 1));
  ParticipantId id = ParticipantId::unpack(shared->packed_id.load());
  // The descriptor is close-on-exec: once the exec happened, the slot reads dead although the
  // process (now `sleep`) lives on.
  EXPECT_TRUE(becomes_dead([&] { return observer.is_alive(id).value(); }));
  EXPECT_EQ(kill(child.pid(), 0), 0);
  child.kill(SIGKILL);
  EXPECT_TRUE(child.wait().signaled);
}

TEST(ParticipantProcess, WorksOnADevShmFile) {
  sys::FileDescriptor file = sys::create_unpublished_shared_memory(0600).value();
  ASSERT_FALSE(sys::resize_file(file.get(), ParticipantTable::size_for(4)));
  sys::SharedMapping mapping =
      sys::SharedMapping::of_file(file.get(), ParticipantTable::size_for(4)).value();
  ParticipantTable* table = ParticipantTable::create(mapping.data(), mapping.size(), 4).value();
  test::SharedObject<Shared> shared;
  Participant observer = Participant::attach(*table, file.get()).value();
  test::Child child = test::Child::start([&]() -> int {
    ParticipantTable* opened = ParticipantTable::open(mapping.data(), mapping.size()).value();
    Result<Participant> me = Participant::attach(*opened, file.get());
    if (!me) return 1;
    shared->packed_id.store(me->id().pack());
    shared->stage.store(1);
    sleep_until_killed();
  });
  ASSERT_TRUE(wait_for(shared->stage, 1));
  ParticipantId id = ParticipantId::unpack(shared->packed_id.load());
  EXPECT_TRUE(observer.is_alive(id).value());
  child.kill(SIGKILL);
  ASSERT_TRUE(wait_until_zombie(child.pid()));
  EXPECT_FALSE(observer.is_alive(id).value());
  EXPECT_TRUE(child.wait().signaled);
}

}  // namespace
}  // namespace xproc::sync
