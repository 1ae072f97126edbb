// RobustRwLock on its default path, the participant table: processes attached to one table are
// named by their participant ids; recover() releases the read holds of a SIGKILLed participant
// (a waiting writer then proceeds) and never those of a live one; a process attached to no table
// is anonymous.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "child_process.h"
#include "shared_object.h"
#include "xproc/sync/detail/liveness.h"
#include "xproc/sync/participant_table.h"
#include "xproc/sync/robust_rw_lock.h"
#include "xproc/sys/file.h"
#include "xproc/sys/memory.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kCapacity = 8;

struct TableFile {
  TableFile()
      : file(sys::create_memory_file("robust_rw_lock_participant_test",
                                     ParticipantTable::size_for(kCapacity))
                 .value()),
        mapping(
            sys::SharedMapping::of_file(file.get(), ParticipantTable::size_for(kCapacity)).value()),
        table(ParticipantTable::create(mapping.data(), mapping.size(), kCapacity).value()) {}

  Result<Participant> attach() { return Participant::attach(*table, file.get()); }

  sys::FileDescriptor file;
  sys::SharedMapping mapping;
  ParticipantTable* table;
};

struct Shared {
  explicit Shared(RwPolicy policy) : lock(Scope::process, policy) {}
  RobustRwLock lock;
  std::atomic<int> readers_ready{0};        // reader threads of the child holding their lock
  std::atomic<std::uint32_t> reader_id{0};  // the reader child's lock_owner_id()
  std::atomic<int> release{0};              // tells a live reader child to release and exit
  std::atomic<int> writer_started{0};       // the writer child is about to wait
  std::atomic<int> writer_acquired{0};      // the writer child holds the lock
};

template <class Done>
bool wait_until(Done done, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

constexpr int kReaderThreads = 2;

// A child that attaches to the table, takes one read hold in each of kReaderThreads threads
// (one of them recursively: recursion is not counted in the lock word), reports, and then either
// sleeps until killed or, when told to, releases everything and exits 0.
test::Child start_reader(TableFile& t, Shared& shared) {
  return test::Child::start([&]() -> int {
    if (lock_owner_id() != 0) return 10;  // a fork child starts anonymous
    Result<Participant> me = t.attach();
    if (!me) return 11;
    if (lock_owner_id() != me->id().pack()) return 12;  // the id is the participant id
    shared.reader_id.store(lock_owner_id());
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int i = 0; i < kReaderThreads; ++i) {
      threads.emplace_back([&, i] {
        if (shared.lock.acquire_shared()) ++failures;
        if (i == 0 && shared.lock.acquire_shared()) ++failures;  // recursive
        shared.readers_ready.fetch_add(1);
        if (!wait_until([&] { return shared.release.load() != 0; }, 60s)) ++failures;
        if (i == 0 && shared.lock.release_shared()) ++failures;
        if (shared.lock.release_shared()) ++failures;
      });
    }
    for (auto& thread : threads) thread.join();
    return failures.load() == 0 ? 0 : 13;
  });
}

// A child that attaches and waits (bounded) for the write lock, then releases it.
test::Child start_writer(TableFile& t, Shared& shared) {
  return test::Child::start([&]() -> int {
    Result<Participant> me = t.attach();
    if (!me) return 21;
    shared.writer_started.store(1);
    if (!shared.lock.try_lock_for(30s)) return 22;
    shared.writer_acquired.store(1);
    shared.lock.unlock();
    return 0;
  });
}

bool writer_waits(const RobustRwLock& lock) {
  const RwLockSnapshot view = lock.snapshot();
  return view.writer_staged || view.queued_writers != 0 || view.parked_writers != 0;
}

class RobustRwLockParticipantTest : public ::testing::TestWithParam<RwPolicy> {};

INSTANTIATE_TEST_SUITE_P(AllPolicies, RobustRwLockParticipantTest,
                         ::testing::Values(RwPolicy::prefer_reader, RwPolicy::prefer_writer,
                                           RwPolicy::phase_fair));

TEST_P(RobustRwLockParticipantTest, RecoverReleasesAKilledParticipantsReadHoldsAndTheWriterGoesOn) {
  TableFile t;
  test::SharedObject<Shared> shared(GetParam());
  Participant me = t.attach().value();
  test::Child reader = start_reader(t, *shared);
  ASSERT_TRUE(wait_until([&] { return shared->readers_ready.load() == kReaderThreads; }));
  test::Child writer = start_writer(t, *shared);
  ASSERT_TRUE(wait_until([&] { return shared->writer_started.load() != 0; }));
  ASSERT_TRUE(wait_until([&] { return writer_waits(shared->lock); }));

  // The reader lives: nothing of it is released, the writer keeps waiting.
  Result<RwRecovery> early = shared->lock.recover();
  ASSERT_TRUE(early.has_value()) << early.error().message();
  EXPECT_EQ(early->read_holds_released, 0u);
  EXPECT_EQ(shared->lock.snapshot().readers, static_cast<std::uint32_t>(kReaderThreads));
  EXPECT_EQ(shared->writer_acquired.load(), 0);

  reader.kill(SIGKILL);
  const test::ChildStatus reader_status = reader.wait(10s);
  EXPECT_TRUE(reader_status.signaled);
  ASSERT_TRUE(
      detail::owner_known_dead(detail::OwnerRecord{t.table->tag(), shared->reader_id.load()}));
  EXPECT_EQ(shared->writer_acquired.load(), 0);  // still blocked by the dead reader's holds

  Result<RwRecovery> recovery = shared->lock.recover();
  ASSERT_TRUE(recovery.has_value()) << recovery.error().message();
  EXPECT_EQ(recovery->read_holds_released, static_cast<std::uint32_t>(kReaderThreads));
  EXPECT_EQ(recovery->read_holds_unresolved, 0u);
  EXPECT_FALSE(recovery->write_lock_released);
  EXPECT_FALSE(recovery->stage_released);

  EXPECT_TRUE(writer.wait(30s).ok());
  EXPECT_EQ(shared->writer_acquired.load(), 1);

  // Released once: a second recovery finds nothing, and the lock is free.
  Result<RwRecovery> again = shared->lock.recover();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->read_holds_released, 0u);
  EXPECT_EQ(shared->lock.snapshot().readers, 0u);
  EXPECT_EQ(shared->lock.try_acquire(), std::error_code{});
  EXPECT_EQ(shared->lock.release(), std::error_code{});
}

TEST_P(RobustRwLockParticipantTest, LiveParticipantsHoldsAreNeverReleased) {
  TableFile t;
  test::SharedObject<Shared> shared(GetParam());
  Participant me = t.attach().value();
  test::Child reader = start_reader(t, *shared);
  ASSERT_TRUE(wait_until([&] { return shared->readers_ready.load() == kReaderThreads; }));

  for (int round = 0; round < 3; ++round) {
    Result<RwRecovery> recovery = shared->lock.recover();
    ASSERT_TRUE(recovery.has_value()) << recovery.error().message();
    EXPECT_EQ(recovery->read_holds_released, 0u);
    EXPECT_EQ(recovery->read_holds_unresolved, 0u);
  }
  EXPECT_EQ(shared->lock.snapshot().readers, static_cast<std::uint32_t>(kReaderThreads));
  EXPECT_EQ(shared->lock.try_acquire(), errc::would_block);

  // The reader releases its own holds (they were still counted) and exits cleanly.
  shared->release.store(1);
  EXPECT_TRUE(reader.wait(30s).ok());
  EXPECT_EQ(shared->lock.snapshot().readers, 0u);
  Result<RwRecovery> after = shared->lock.recover();
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->read_holds_released, 0u);
}

TEST(RobustRwLockParticipant, UnattachedProcessIsAnonymousAndRecoversNothing) {
  test::SharedObject<Shared> shared(RwPolicy::phase_fair);
  test::Child child = test::Child::start([&]() -> int {
    if (lock_owner_id() != 0) return 1;  // attached to no table
    if (shared->lock.acquire_shared()) return 2;
    shared->readers_ready.store(1);
    for (;;) pause();
  });
  ASSERT_TRUE(wait_until([&] { return shared->readers_ready.load() == 1; }));
  child.kill(SIGKILL);
  EXPECT_TRUE(child.wait(10s).signaled);
  // Neither the dead anonymous reader nor an unattached recoverer can name anyone dead.
  Result<RwRecovery> recovery = shared->lock.recover();
  ASSERT_TRUE(recovery.has_value());
  EXPECT_EQ(recovery->read_holds_released, 0u);
  EXPECT_EQ(shared->lock.snapshot().readers, 1u);  // leaked, as documented
}

}  // namespace
}  // namespace xproc::sync
