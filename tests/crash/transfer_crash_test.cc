// Cross-memory transfer crash injection: a claimer SIGKILLed mid-pull (at the claim step, and at
// random instants of large pulls), an owner SIGKILLed before and during a pull (reaped and
// zombie), and slots of dead owners taken over by new registrations. Survivors never hang: the
// owner's handle completes with peer_dead, the claimer's pull returns an error.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "../bulk/transfer_test_support.h"
#include "child_process.h"
#include "die.h"
#include "shared_object.h"
#include "xproc/bulk/transfer.h"
#include "xproc/bulk/transfer_layout.h"
#include "xproc/sys/error.h"
#include "xproc/sys/file.h"
#include "xproc/sys/memory.h"

namespace xproc::bulk {
namespace {

using namespace std::chrono_literals;
using test::await_flag;
using test::join;
using test::make_segment;
using test::open_endpoint;
using test::pattern;
using test::slot_of;
using xproc::test::die;

// A descriptor and handshake words in MAP_SHARED memory.
struct Board {
  TransferDescriptor descriptor;
  std::atomic<std::uint32_t> posted;
  std::atomic<std::uint32_t> started;
};

using SharedBoard = xproc::test::SharedObject<Board>;

TEST(TransferCrash, ClaimerKilledAfterItsClaimCompletesTheHandleWithPeerDeadWithinAPeriod) {
  shm::Segment segment = make_segment(8);
  TransferEndpoint endpoint = open_endpoint(segment, 5ms);
  std::vector<std::byte> source = pattern(1 << 20, 1);
  Transfer transfer = endpoint.register_source(source).value();
  const TransferDescriptor descriptor = transfer.descriptor();
  xproc::test::Child claimer = xproc::test::Child::start([&] {
    shm::Segment mine = join(segment);
    // Step 4 of the protocol exactly as pull() does it, then death before the copy (step 5).
    detail::TransferSlot& slot = slot_of(mine, descriptor.slot);
    std::uint64_t open = slot.state.load(std::memory_order_acquire);
    if (detail::state_of(open) != detail::SlotState::open) return 1;
    if (!slot.state.compare_exchange_strong(
            open,
            detail::make_state(descriptor.generation, detail::SlotState::claimed,
                               mine.self().id().pack()),
            std::memory_order_acq_rel)) {
      return 2;
    }
    die();
  });
  EXPECT_TRUE(claimer.wait(30s).signaled);
  const auto start = sync::Clock::now();
  EXPECT_EQ(transfer.wait_for(10s), errc::peer_dead);
  EXPECT_LT(sync::Clock::now() - start, 2s);
  // The transfer is over: a second pull is refused, the slot is reusable.
  std::vector<std::byte> target(source.size());
  EXPECT_EQ(endpoint.pull(descriptor, target).error(), errc::already_returned);
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(endpoint.register_source(source));
}

TEST(TransferCrash, ClaimerKilledAtRandomInstantsOfLargePullsNeverHangsTheOwner) {
  shm::Segment segment = make_segment(8);
  TransferEndpoint endpoint = open_endpoint(segment, 5ms);
  std::vector<std::byte> source = pattern(std::size_t{16} << 20, 2);
  std::mt19937 random(2024);
  SharedBoard board;
  int outcomes[3] = {0, 0, 0};  // completed, peer_dead, never claimed
  const long trials = xproc::test::scaled(20);
  for (long trial = 0; trial < trials; ++trial) {
    Transfer transfer = endpoint.register_source(source).value();
    board->descriptor = transfer.descriptor();
    board->started.store(0);
    xproc::test::Child claimer = xproc::test::Child::start([&] {
      test::Joined own(segment);
      std::vector<std::byte> target(source.size());
      std::memset(target.data(), 0, target.size());  // fault the pages in before the pull
      board->started.store(1, std::memory_order_release);
      Result<std::size_t> pulled = own->pull(board->descriptor, target);
      return pulled ? 0 : 1;
    });
    ASSERT_TRUE(await_flag(board->started, sync::Clock::now() + 30s));
    std::this_thread::sleep_for(std::chrono::microseconds(random() % 40000));  // the kill instant
    claimer.kill(SIGKILL);
    xproc::test::ChildStatus status = claimer.wait(30s);
    ASSERT_TRUE(status.signaled || status.ok());
    std::error_code result = transfer.poll();
    if (result == errc::would_block) {
      // Killed before its claim: the transfer is still open and still good.
      ++outcomes[2];
      EXPECT_EQ(transfer.wait_for(20ms), errc::timed_out);
      std::vector<std::byte> target(source.size());
      ASSERT_EQ(endpoint.pull(transfer.descriptor(), target).value(), source.size());
      EXPECT_FALSE(transfer.wait_for(5s));
    } else if (!result) {
      ++outcomes[0];
      EXPECT_EQ(transfer.transferred(), source.size());
    } else {
      ++outcomes[1];
      EXPECT_EQ(result, errc::peer_dead);
    }
  }
  std::printf("claimer kills: %d completed, %d peer_dead, %d before the claim\n", outcomes[0],
              outcomes[1], outcomes[2]);
  EXPECT_EQ(outcomes[0] + outcomes[1] + outcomes[2], trials);
}

TEST(TransferCrash, OwnerKilledBeforeThePullIsPeerDeadReapedOrZombie) {
  for (bool reap : {true, false}) {
    shm::Segment segment = make_segment(8);
    TransferEndpoint endpoint = open_endpoint(segment);
    SharedBoard board;
    xproc::test::Child owner = xproc::test::Child::start([&]() -> int {
      test::Joined own(segment);
      std::vector<std::byte> source = pattern(1 << 20, 3);
      Transfer transfer = own->register_source(source).value();
      board->descriptor = transfer.descriptor();
      board->posted.store(1, std::memory_order_release);
      die();
    });
    ASSERT_TRUE(await_flag(board->posted, sync::Clock::now() + 30s));
    if (reap) {
      EXPECT_TRUE(owner.wait(30s).signaled);
    } else {
      // Dead but not reaped: its pid still names the zombie.
      siginfo_t info{};
      ASSERT_EQ(waitid(P_PID, static_cast<id_t>(owner.pid()), &info, WEXITED | WNOWAIT), 0);
    }
    std::vector<std::byte> target(1 << 20);
    EXPECT_EQ(endpoint.pull(board->descriptor, target).error(), errc::peer_dead) << reap;
    // The probe says the same, and the dead owner's slot is taken over when slots run out.
    EXPECT_EQ(endpoint.probe(sync::ParticipantId::unpack(board->descriptor.owner)).error,
              errc::peer_dead);
    std::vector<Transfer> all;
    for (int i = 0; i < 8; ++i) all.push_back(endpoint.register_source(target).value());
    if (!reap) {
      EXPECT_TRUE(owner.wait(30s).signaled);
    }
  }
}

TEST(TransferCrash, OwnerKilledAfterAPullIsPeerDeadThroughTheCachedPidfd) {
  shm::Segment segment = make_segment(8);
  TransferEndpoint endpoint = open_endpoint(segment);
  SharedBoard first;
  SharedBoard second;
  xproc::test::Child owner = xproc::test::Child::start([&]() -> int {
    test::Joined own(segment);
    std::vector<std::byte> source = pattern(1 << 16, 5);
    Transfer one = own->register_source(source).value();
    Transfer two = own->register_source(source).value();
    second->descriptor = two.descriptor();
    first->descriptor = one.descriptor();
    first->posted.store(1, std::memory_order_release);
    if (one.wait_for(30s)) return 1;
    die();
  });
  ASSERT_TRUE(await_flag(first->posted, sync::Clock::now() + 30s));
  std::vector<std::byte> target(1 << 16);
  ASSERT_EQ(endpoint.pull(first->descriptor, target).value(), target.size());  // caches the pidfd
  EXPECT_TRUE(owner.wait(30s).signaled);
  EXPECT_EQ(endpoint.pull(second->descriptor, target).error(), errc::peer_dead);
}

TEST(TransferCrash, OwnerKilledDuringLargePullsGivesTheClaimerAnErrorNeverAHang) {
  const long trials = xproc::test::scaled(10);
  std::mt19937 random(77);
  int outcomes[2] = {0, 0};  // pulled whole, peer_dead
  constexpr std::size_t kSize = std::size_t{16} << 20;
  std::vector<std::byte> expected = pattern(kSize, 4);
  for (long trial = 0; trial < trials; ++trial) {
    shm::Segment segment = make_segment(8);
    TransferEndpoint endpoint = open_endpoint(segment);
    SharedBoard board;
    xproc::test::Child owner = xproc::test::Child::start([&] {
      test::Joined own(segment);
      Transfer transfer = own->register_source(expected).value();
      board->descriptor = transfer.descriptor();
      board->posted.store(1, std::memory_order_release);
      (void)transfer.wait_for(60s);
      pause();  // stays until killed
      return 0;
    });
    ASSERT_TRUE(await_flag(board->posted, sync::Clock::now() + 30s));
    std::vector<std::byte> target(kSize);
    std::memset(target.data(), 0, target.size());
    std::thread killer([&] {
      std::this_thread::sleep_for(std::chrono::microseconds(random() % 40000));
      owner.kill(SIGKILL);
    });
    Result<std::size_t> pulled = endpoint.pull(board->descriptor, target);
    killer.join();
    if (pulled) {
      ++outcomes[0];
      EXPECT_EQ(*pulled, kSize);
      EXPECT_TRUE(target == expected);
    } else {
      ++outcomes[1];
      EXPECT_EQ(pulled.error(), errc::peer_dead) << pulled.error().message();
    }
    EXPECT_TRUE(owner.wait(30s).signaled);
  }
  std::printf("owner kills: %d pulled whole, %d peer_dead\n", outcomes[0], outcomes[1]);
}

TEST(TransferCrash, SlotsOfADeadOwnerInEveryStateAreTakenOver) {
  shm::Segment segment = make_segment(4);
  TransferEndpoint endpoint = open_endpoint(segment);
  SharedBoard board;
  xproc::test::Child owner = xproc::test::Child::start([&] {
    test::Joined own(segment);
    static std::vector<std::byte> source(4096);
    // open, complete (not yet retired), registering (forged by hand), and open again.
    std::vector<Transfer> transfers;
    for (int i = 0; i < 3; ++i) transfers.push_back(own->register_source(source).value());
    std::vector<std::byte> target(4096);
    if (!own->pull(transfers[1].descriptor(), target)) return 1;
    board->posted.store(1, std::memory_order_release);
    // The fourth slot: taken, then death mid-registration.
    for (std::uint32_t i = 0; i < 4; ++i) {
      detail::TransferSlot& slot = slot_of(own.segment, i);
      std::uint64_t word = slot.state.load();
      if (detail::state_reusable(word)) {
        slot.state.store(detail::make_state(detail::next_generation(detail::state_generation(word)),
                                            detail::SlotState::registering,
                                            own.segment.self().id().pack()));
      }
    }
    die();
  });
  EXPECT_TRUE(owner.wait(30s).signaled);
  ASSERT_EQ(board->posted.load(), 1u);
  std::vector<std::byte> source(100);
  std::vector<Transfer> mine;
  for (int i = 0; i < 4; ++i) {
    Result<Transfer> transfer = endpoint.register_source(source);
    ASSERT_TRUE(transfer) << i << ": " << transfer.error().message();
    mine.push_back(std::move(*transfer));
  }
  EXPECT_EQ(endpoint.register_source(source).error(), errc::limit_reached);
}

}  // namespace
}  // namespace xproc::bulk
