// bulk::BulkChannel across processes: several producer and consumer processes (each payload
// exactly once, byte-exact, pull and pool paths mixed), a non-dumpable producer that falls
// back to the pool and says why, a consumer killed mid-pull (the producer re-sends through the
// pool), a producer killed with a pulled payload in flight (consumers skip it, no hang), a
// producer killed mid-stream, a consumer killed mid-stream while the producer is paced, and a
// consumer killed mid-ring (the producer sends the payload again).

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bulk_channel_test_support.h"
#include "child_process.h"
#include "shared_object.h"
#include "transfer_test_support.h"
#include "xproc/bulk/bulk_channel.h"
#include "xproc/bulk/transfer.h"
#include "xproc/bulk/transfer_layout.h"
#include "xproc/sys/error.h"
#include "xproc/sys/file.h"

namespace xproc::bulk {
namespace {

using namespace std::chrono_literals;
using test::check_payload;
using test::config_for;
using test::make_payload;
using xproc::test::Child;

constexpr std::uint64_t kMiB = 1u << 20;
constexpr std::uint32_t kParticipants = 16;

shm::SegmentOptions segment_options() {
  shm::SegmentOptions options;
  options.participant_capacity = kParticipants;
  return options;
}

BulkChannel create(const BulkChannelConfig& config) {
  return BulkChannel::create_anonymous(config, segment_options()).value();
}

// A fork child's own attachment (the parent's copy is detached in the child).
BulkChannel join(const BulkChannel& parent, const BulkProcessOptions& process = {}) {
  return BulkChannel::adopt(sys::reopen(parent.segment().fd()).value(), segment_options(), process)
      .value();
}

struct Tally {
  static constexpr std::uint32_t kProducers = 4;
  static constexpr std::uint32_t kMaxSequence = 4096;
  std::atomic<std::uint32_t> delivered[kProducers][kMaxSequence];
  std::atomic<std::uint32_t> received;
  std::atomic<std::uint32_t> bad;
  std::atomic<std::uint32_t> flag;
  std::atomic<std::uint64_t> fallbacks;
  std::atomic<std::uint64_t> restarts;
};
using SharedTally = xproc::test::SharedObject<Tally>;

TEST(BulkChannelProcess, ProducerAndConsumerProcessesDeliverEachPayloadOnceByteExact) {
  const auto per_producer =
      static_cast<std::uint32_t>(std::min<long>(xproc::test::scaled(40), 4000));
  constexpr std::uint32_t kProducers = 2;
  constexpr int kConsumers = 2;
  BulkChannel channel = create(config_for(16 * kMiB, kMiB, 3));
  SharedTally tally;
  const std::uint32_t total = kProducers * per_producer;
  const std::size_t sizes[] = {16, 4095, 70000, kMiB, 3 * kMiB + 8, 200, 16 * kMiB, 9000};
  std::vector<Child> children;
  for (std::uint32_t p = 0; p < kProducers; ++p) {
    children.push_back(Child::start([&, p] {
      BulkProcessOptions process;
      process.allow_pull = p == 0;  // producer 0 pulls from 1 MiB, producer 1 never
      BulkChannel own = join(channel, process);
      for (std::uint32_t i = 0; i < per_producer; ++i) {
        const std::size_t size = sizes[(i + p) % std::size(sizes)];
        if (own.send(make_payload(size, p, i))) return 1;
      }
      const PathReport report = own.path_report();
      if (p == 0 && report.sent_pull == 0) return 2;
      if (p == 1 && (report.sent_pull != 0 || report.pull_reason.empty())) return 3;
      return 0;
    }));
  }
  for (int c = 0; c < kConsumers; ++c) {
    children.push_back(Child::start([&] {
      BulkChannel own = join(channel);
      std::vector<std::byte> out;
      while (tally->received.load() < total) {
        std::error_code error = own.receive_until(out, sync::Clock::now() + 50ms);
        if (error == errc::timed_out) continue;
        if (error) return 4;
        tally->received.fetch_add(1);
        const auto id = check_payload(out);
        if (!id || id->producer >= kProducers || id->sequence >= per_producer) {
          tally->bad.fetch_add(1);
          continue;
        }
        tally->delivered[id->producer][id->sequence].fetch_add(1);
      }
      return 0;
    }));
  }
  for (Child& child : children) {
    const xproc::test::ChildStatus status = child.wait(180s);
    EXPECT_TRUE(status.ok()) << status.exit_code << " " << status.term_signal;
  }
  EXPECT_EQ(tally->bad.load(), 0u);
  EXPECT_EQ(tally->received.load(), total);
  for (std::uint32_t p = 0; p < kProducers; ++p) {
    for (std::uint32_t i = 0; i < per_producer; ++i) {
      EXPECT_EQ(tally->delivered[p][i].load(), 1u) << p << "/" << i;
    }
  }
  const BulkChannelStatistics stats = channel.statistics();
  EXPECT_EQ(stats.pool_free, stats.pool_buffers);
}

TEST(BulkChannelProcess, NonDumpableProducerUsesThePoolAndSaysWhy) {
  BulkChannel channel = create(config_for(4 * kMiB, kMiB));
  Child producer = Child::start([&] {
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return 1;
    BulkChannel own = join(channel);
    const PathReport report = own.path_report();
    if (report.pull_enabled) return 2;
    if (report.pull_reason.find("not dumpable") == std::string::npos) return 3;
    if (own.path_for(2 * kMiB) != BulkPath::pool_copy) return 4;
    for (std::uint32_t i = 0; i < 4; ++i) {
      if (own.send(make_payload(2 * kMiB, 1, i))) return 5;
    }
    return own.path_report().sent_pool == 4 ? 0 : 6;
  });
  std::vector<std::byte> out;
  for (std::uint32_t i = 0; i < 4; ++i) {
    ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 30s));
    const auto id = check_payload(out);
    ASSERT_TRUE(id.has_value());
    EXPECT_EQ(id->sequence, i);
  }
  EXPECT_TRUE(producer.wait(30s).ok());
}

TEST(BulkChannelProcess, ConsumerKilledMidPullMakesTheProducerResendThroughThePool) {
  BulkChannel channel = create(config_for(4 * kMiB, kMiB));
  SharedTally tally;
  const std::vector<std::byte> payload = make_payload(2 * kMiB, 1, 7);
  std::error_code sent = make_error_code(errc::timed_out);
  std::thread producer([&] { sent = channel.send(payload); });
  // The consumer claims the record and the transfer (as pull() does before its copy), then is
  // killed before it copies anything.
  Child consumer = Child::start([&] {
    BulkChannel own = join(channel);
    Result<channel::Message> message = own.endpoint().peek_until(sync::Clock::now() + 30s);
    if (!message || message->data().size() != 48) return 1;
    TransferDescriptor descriptor;
    std::memcpy(&descriptor, message->data().data() + 16, sizeof descriptor);
    detail::TransferSlot& slot = test::slot_of(own.segment(), descriptor.slot);
    std::uint64_t word = slot.state.load();
    if (detail::state_of(word) != detail::SlotState::open) return 2;
    if (!slot.state.compare_exchange_strong(
            word, detail::make_state(descriptor.generation, detail::SlotState::claimed,
                                     own.segment().self().id().pack()))) {
      return 3;
    }
    tally->flag.store(1, std::memory_order_release);
    for (;;) pause();
  });
  ASSERT_TRUE(test::await_flag(tally->flag, sync::Clock::now() + 30s));
  consumer.kill(SIGKILL);
  (void)consumer.wait(10s);
  // The dead consumer's record is redelivered to us (its pull is refused and skipped), then the
  // payload re-sent through the pool arrives: exactly once.
  std::vector<std::byte> out;
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 30s));
  EXPECT_EQ(out, payload);
  producer.join();
  EXPECT_FALSE(sent) << sent.message();
  EXPECT_EQ(channel.path_report().pull_fallbacks, 1u);
  EXPECT_EQ(channel.try_receive(out), errc::would_block);
}

TEST(BulkChannelProcess, ProducerKilledWithAPullInFlightIsSkippedWithoutHang) {
  BulkChannel channel = create(config_for(4 * kMiB, kMiB));
  SharedTally tally;
  Child producer = Child::start([&] {
    BulkChannel own = join(channel);
    // An intact pool payload first, then a pulled one whose owner dies before any copy.
    if (own.send(make_payload(100000, 1, 0))) return 1;
    const std::vector<std::byte> pulled = make_payload(2 * kMiB, 1, 1);
    Result<Completion> completion = own.post(pulled);
    if (!completion || completion->path() != BulkPath::pull) return 2;
    tally->flag.store(1, std::memory_order_release);
    for (;;) pause();
  });
  ASSERT_TRUE(test::await_flag(tally->flag, sync::Clock::now() + 30s));
  producer.kill(SIGKILL);
  (void)producer.wait(10s);
  std::vector<std::byte> out;
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 30s));
  const auto id = check_payload(out);
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->sequence, 0u);
  // The pulled payload's owner is dead: its record is skipped; every producer is gone, so the
  // receive ends with peer_dead (or times out), never with a torn payload.
  const std::error_code error = channel.receive_until(out, sync::Clock::now() + 5s);
  EXPECT_TRUE(error == errc::peer_dead || error == errc::timed_out) << error.message();
}

TEST(BulkChannelProcess, ConsumerKilledBeforeReleaseHandsThePoolPayloadToTheNextConsumer) {
  BulkChannel channel = create(config_for(4 * kMiB, kPullNever));
  SharedTally tally;
  const std::vector<std::byte> payload = make_payload(kMiB, 1, 3);
  ASSERT_FALSE(channel.send(payload));
  // The consumer takes the record (as receive() does before copying out) and is killed.
  Child consumer = Child::start([&] {
    BulkChannel own = join(channel);
    Result<channel::Message> message = own.endpoint().peek_until(sync::Clock::now() + 30s);
    if (!message || message->data().size() != 48) return 1;
    tally->flag.store(1, std::memory_order_release);
    for (;;) pause();
  });
  ASSERT_TRUE(test::await_flag(tally->flag, sync::Clock::now() + 30s));
  consumer.kill(SIGKILL);
  (void)consumer.wait(10s);
  std::vector<std::byte> out;
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 30s));
  EXPECT_EQ(out, payload);
  EXPECT_EQ(channel.try_receive(out), errc::would_block);
  EXPECT_GE(channel.statistics().channel.redelivered, 1u);
  const BulkChannelStatistics stats = channel.statistics();
  EXPECT_EQ(stats.pool_free, stats.pool_buffers);
}

TEST(BulkChannelProcess, NamedChannelIsOpenedByAnotherProcess) {
  const std::string name = "bulkfront-test-" + std::to_string(getpid());
  shm::SegmentOptions options = segment_options();
  options.unlink_when_last_detaches = true;
  Result<BulkChannel> created = BulkChannel::create(name, config_for(4 * kMiB, kMiB), options);
  ASSERT_TRUE(created) << created.error().message();
  Child producer = Child::start([&] {
    Result<BulkChannel> opened = BulkChannel::open(name, segment_options());
    if (!opened) return 1;
    for (std::uint32_t i = 0; i < 3; ++i) {
      if (opened->send(make_payload(i == 1 ? 2 * kMiB : 5000, 2, i))) return 2;
    }
    return opened->path_report().sent_pull == 1 ? 0 : 3;
  });
  std::vector<std::byte> out;
  for (std::uint32_t i = 0; i < 3; ++i) {
    ASSERT_FALSE(created->receive_until(out, sync::Clock::now() + 30s));
    const auto id = check_payload(out);
    ASSERT_TRUE(id.has_value());
    EXPECT_EQ(id->sequence, i);
  }
  EXPECT_TRUE(producer.wait(30s).ok());
  EXPECT_EQ(BulkChannel::open("bulkfront-test-none", segment_options()).error(), errc::not_found);
}

TEST(BulkChannelProcess, ProducerKilledMidStreamNeverYieldsATornPayload) {
  // A 64 MiB payload streamed in 4 KiB chunks takes milliseconds to copy; the producer is killed
  // at some point of it. The consumer gets the whole payload (the kill came late) or nothing
  // (the record is skipped and the receive ends), never a torn payload, and never hangs.
  BulkChannel channel = create(config_for(64 * kMiB, kPullNever, 2));
  SharedTally tally;
  for (int round = 0; round < 3; ++round) {
    tally->flag.store(0);
    Child producer = Child::start([&] {
      BulkProcessOptions process;
      process.stream_chunk = 4096;
      process.stream_window = 0;  // unpaced: the copy runs without a consumer
      BulkChannel own = join(channel, process);
      const std::vector<std::byte> payload = make_payload(64 * kMiB, 1, 0);
      tally->flag.store(1, std::memory_order_release);
      if (own.send(payload)) return 1;
      for (;;) pause();
    });
    ASSERT_TRUE(test::await_flag(tally->flag, sync::Clock::now() + 30s));
    // The record is in the channel (committed: a reservation lasts a few stores): the copy runs.
    const sync::Deadline limit = sync::Clock::now() + 30s;
    while (channel.statistics().channel.depth_messages == 0 && sync::Clock::now() < limit) {
      std::this_thread::yield();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1 + 2 * round));
    producer.kill(SIGKILL);
    (void)producer.wait(10s);
    std::vector<std::byte> out;
    const std::error_code error = channel.receive_until(out, sync::Clock::now() + 5s);
    if (!error) {
      EXPECT_TRUE(check_payload(out).has_value()) << "torn payload in round " << round;
    } else {
      EXPECT_TRUE(error == errc::peer_dead || error == errc::timed_out) << error.message();
    }
  }
  // Every buffer of the dead producers comes back.
  ASSERT_TRUE(channel.recover());
  const BulkChannelStatistics stats = channel.statistics();
  EXPECT_EQ(stats.pool_free, stats.pool_buffers);
}

TEST(BulkChannelProcess, ConsumerKilledMidStreamWhileThePacedProducerWaitsGetsItRedelivered) {
  // A 64 MiB payload in 64 KiB chunks, paced by 4 chunks: the producer follows its consumer. The
  // consumer is stopped (the producer waits on a live claimer), then killed: the producer sees
  // it dead, the record is redelivered, and the test's receive takes the stream over from its
  // start. The payload arrives exactly once, byte-exact, and the producer's send returns {}.
  BulkChannel channel = create(config_for(64 * kMiB, kPullNever, 2));
  SharedTally tally;
  Child consumer = Child::start([&] {
    BulkChannel own = join(channel);
    std::vector<std::byte> out;
    tally->flag.store(1, std::memory_order_release);
    if (own.receive_until(out, sync::Clock::now() + 60s)) return 1;
    if (!check_payload(out)) tally->bad.fetch_add(1);
    tally->received.fetch_add(1);
    return 0;
  });
  ASSERT_TRUE(test::await_flag(tally->flag, sync::Clock::now() + 30s));
  Child producer = Child::start([&] {
    BulkProcessOptions process;
    process.stream_chunk = 64 << 10;
    process.stream_window = 4;
    BulkChannel own = join(channel, process);
    const std::vector<std::byte> payload = make_payload(64 * kMiB, 1, 0);
    tally->flag.store(2, std::memory_order_release);
    return own.send(payload) ? 1 : 0;
  });
  const sync::Deadline limit = sync::Clock::now() + 30s;
  // acquire: pairs with the producer's release store of 2.
  while (tally->flag.load(std::memory_order_acquire) != 2 && sync::Clock::now() < limit) {
    std::this_thread::yield();
  }
  ASSERT_EQ(tally->flag.load(), 2u);
  // The consumer claimed the stream's record: it copies as the producer publishes.
  while (channel.statistics().channel.claimed_total == 0 && sync::Clock::now() < limit) {
    std::this_thread::yield();
  }
  std::this_thread::sleep_for(2ms);  // the consumer is somewhere in the stream (or done)
  consumer.kill(SIGSTOP);
  std::this_thread::sleep_for(20ms);  // the producer waits on a stopped, live claimer
  consumer.kill(SIGKILL);
  (void)consumer.wait(10s);
  // The sweep puts the dead claimer's record back (the producer's wait may have done it first).
  // Not redelivered: the consumer released the record, so it had the whole payload (its count
  // may have died with it).
  ASSERT_TRUE(channel.recover());
  std::vector<std::byte> out;
  if (channel.statistics().channel.redelivered != 0) {
    EXPECT_EQ(tally->received.load(), 0u);
    ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 60s));
    const auto id = check_payload(out);
    ASSERT_TRUE(id.has_value()) << "torn payload";
    EXPECT_EQ(out.size(), 64 * kMiB);
  }
  const xproc::test::ChildStatus status = producer.wait(60s);
  EXPECT_TRUE(status.ok()) << status.exit_code << " " << status.term_signal;
  EXPECT_EQ(tally->bad.load(), 0u);
  EXPECT_EQ(channel.try_receive(out), errc::would_block);  // exactly once
  ASSERT_TRUE(channel.recover());
  const BulkChannelStatistics stats = channel.statistics();
  EXPECT_EQ(stats.pool_free, stats.pool_buffers);
}

TEST(BulkChannelProcess, ConsumerKilledMidRingStreamMakesTheProducerSendThePayloadAgain) {
  // A 64 MiB payload through a ring of 4 x 64 KiB: the consumer is stopped in the middle, then
  // killed. Once the ring has wrapped (its first chunks are overwritten) nobody can take the
  // stream over, so the producer aborts it and sends the payload again as a new record; killed
  // before the wrap, the record is redelivered and read from its start. Either way the test's
  // receive gets the payload once, byte-exact, and the producer's send returns {}. Rounds until
  // one kill came after the wrap (a restart), at most 10: the kill's moment is the scheduler's.
  BulkChannel channel = create(config_for(64 * kMiB, kPullNever, 2));
  SharedTally tally;
  BulkProcessOptions process;
  process.stream_chunk = 64 << 10;
  process.stream_window = 4;
  process.stream_ring_min = 0;
  std::vector<std::byte> out(64 * kMiB);
  std::uint64_t restarts = 0;
  for (int round = 0; round < 10 && restarts == 0; ++round) {
    tally->flag.store(0);
    tally->received.store(0);
    tally->restarts.store(0);
    // The producer first: a consumer that joins after every producer so far is gone (the last
    // round's) would be told peer_dead (the channel's end of stream).
    Child producer = Child::start([&] {
      BulkChannel own = join(channel, process);
      const std::vector<std::byte> payload = make_payload(64 * kMiB, 1, 0);
      tally->flag.store(1, std::memory_order_release);
      if (own.send(payload)) return 1;
      tally->restarts.store(own.path_report().ring_restarts);
      return own.path_report().sent_ring == 1 ? 0 : 2;
    });
    ASSERT_TRUE(test::await_flag(tally->flag, sync::Clock::now() + 30s));
    const std::uint64_t claimed = channel.statistics().channel.claimed_total;
    Child consumer = Child::start([&] {
      BulkChannel own = join(channel, process);
      std::vector<std::byte> into(64 * kMiB, std::byte{1});  // faulted in before the stream
      Result<std::size_t> got = own.receive_until(std::span(into), sync::Clock::now() + 60s);
      if (!got) return 1;
      tally->received.fetch_add(1);  // at once: killed from here on, the payload was ours
      if (!check_payload(std::span(into).first(*got))) tally->bad.fetch_add(1);
      return 0;
    });
    const sync::Deadline limit = sync::Clock::now() + 30s;
    while (channel.statistics().channel.claimed_total == claimed && sync::Clock::now() < limit) {
      std::this_thread::yield();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1 + round % 3));  // mid-stream (or done)
    consumer.kill(SIGSTOP);
    std::this_thread::sleep_for(20ms);  // the producer waits on a stopped, live claimer
    consumer.kill(SIGKILL);
    const xproc::test::ChildStatus killed = consumer.wait(10s);
    EXPECT_TRUE(killed.ok() || killed.term_signal == SIGKILL) << killed.exit_code;
    if (tally->received.load() == 0) {
      // Killed before its receive returned: the payload comes again, to us.
      Result<std::size_t> got = channel.receive_until(std::span(out), sync::Clock::now() + 60s);
      ASSERT_TRUE(got.has_value()) << got.error().message();
      ASSERT_EQ(*got, 64 * kMiB);
      ASSERT_TRUE(check_payload(out).has_value()) << "torn payload in round " << round;
    }
    const xproc::test::ChildStatus status = producer.wait(60s);
    EXPECT_TRUE(status.ok()) << status.exit_code << " " << status.term_signal;
    EXPECT_LE(tally->restarts.load(), 1u);
    if (tally->received.load() != 0) {
      EXPECT_EQ(tally->restarts.load(), 0u);
    }
    restarts += tally->restarts.load();
    EXPECT_EQ(channel.try_receive(out), errc::would_block);  // exactly once
  }
  EXPECT_EQ(restarts, 1u) << "no kill landed after the ring wrapped in 10 rounds";
  EXPECT_EQ(tally->bad.load(), 0u);
  ASSERT_TRUE(channel.recover());
  const BulkChannelStatistics stats = channel.statistics();
  EXPECT_EQ(stats.pool_free, stats.pool_buffers);
}

}  // namespace
}  // namespace xproc::bulk
