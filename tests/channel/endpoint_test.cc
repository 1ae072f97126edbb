// Channel operations between threads of one process: every operation, its errors, edge cases
// (empty, full, zero-length, max-size, wrap points of positions, corrupt records) and a
// multi-producer multi-consumer stress where every message is checked.
#include "xproc/channel/endpoint.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "channel_test_support.h"
#include "child_process.h"
#include "eventually.h"
#include "xproc/sys/error.h"

namespace xproc::channel {
namespace {

using namespace std::chrono_literals;
using test::as_bytes;
using test::SharedRegion;
using test::small_config;

std::error_code code(errc e) {
  return make_error_code(e);
}

TEST(ChannelFormat, RejectsConfigsOutOfRange) {
  SharedRegion region(small_config());
  ChannelConfig config = small_config();
  config.capacity_bytes = 3000;  // not a power of two
  EXPECT_EQ(format(region.bytes(), config), code(errc::invalid_argument));
  EXPECT_EQ(region_size_for(config), 0u);
  config = small_config(4096, 4096);  // max message does not fit with its header
  EXPECT_EQ(format(region.bytes(), config), code(errc::invalid_argument));
  config = small_config();
  config.start_position = 8;  // not a multiple of 16
  EXPECT_EQ(format(region.bytes(), config), code(errc::invalid_argument));
  config = small_config(8192);  // region too small
  EXPECT_EQ(format(region.bytes(), config), code(errc::invalid_argument));
  EXPECT_EQ(format(region.bytes().subspan(8), small_config(1024)), code(errc::invalid_argument));
}

TEST(ChannelOpen, UnformattedRegionIsALayoutMismatch) {
  sys::SharedMapping memory = sys::SharedMapping::anonymous(8192).value();
  std::span<std::byte> bytes{static_cast<std::byte*>(memory.data()), memory.size()};
  EXPECT_EQ(Endpoint::open(bytes).error(), code(errc::layout_mismatch));
}

TEST(ChannelOpen, OtherVersionIsALayoutMismatchAndBadSizesACorruptSegment) {
  SharedRegion region(small_config());
  auto* header = reinterpret_cast<detail::ChannelHeader*>(region.bytes().data());
  header->identity.version = 99;
  EXPECT_EQ(Endpoint::open(region.bytes()).error(), code(errc::layout_mismatch));
  header->identity.version = detail::kLayoutVersion;
  header->identity.capacity = 1u << 20;  // larger than the region
  EXPECT_EQ(Endpoint::open(region.bytes()).error(), code(errc::corrupt_segment));
  header->identity.capacity = 4096;
  header->identity.max_message = 5000;
  EXPECT_EQ(Endpoint::open(region.bytes()).error(), code(errc::corrupt_segment));
  header->identity.max_message = 512;
  EXPECT_TRUE(Endpoint::open(region.bytes()).has_value());
  EXPECT_EQ(Endpoint::open(region.bytes().first(2000)).error(), code(errc::corrupt_segment));
}

TEST(Channel, SendThenReceiveReturnsTheSameBytes) {
  SharedRegion region(small_config());
  Endpoint channel = Endpoint::open(region.bytes()).value();
  ASSERT_FALSE(channel.send(as_bytes("hello")));
  ASSERT_FALSE(channel.try_send(as_bytes("world!")));
  std::array<std::byte, 64> buffer{};
  Result<std::size_t> n = channel.receive(buffer);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buffer.data()), *n), "hello");
  std::string text;
  ASSERT_FALSE(channel.try_receive(text));
  EXPECT_EQ(text, "world!");
  EXPECT_EQ(channel.try_receive(buffer).error(), code(errc::would_block));
}

TEST(Channel, ZeroLengthAndMaximumSizeMessagesPassLargerAreRefused) {
  SharedRegion region(small_config(4096, 512));
  Endpoint channel = Endpoint::open(region.bytes()).value();
  std::vector<std::byte> max(512, std::byte{0x5a});
  std::vector<std::byte> too_large(513);
  EXPECT_EQ(channel.send(too_large), code(errc::message_too_large));
  EXPECT_EQ(channel.try_reserve(513).error(), code(errc::message_too_large));
  ASSERT_FALSE(channel.send(std::span<const std::byte>{}));
  ASSERT_FALSE(channel.send(max));
  std::vector<std::byte> out;
  ASSERT_FALSE(channel.try_receive(out));
  EXPECT_TRUE(out.empty());
  ASSERT_FALSE(channel.try_receive(out));
  EXPECT_EQ(out, max);
}

TEST(Channel, ReceiveIntoATooSmallBufferKeepsTheMessageQueued) {
  SharedRegion region(small_config());
  Endpoint channel = Endpoint::open(region.bytes()).value();
  ASSERT_FALSE(channel.send(as_bytes("a longer message")));
  std::array<std::byte, 4> small{};
  EXPECT_EQ(channel.try_receive(small).error(), code(errc::message_too_large));
  EXPECT_EQ(channel.receive(small).error(), code(errc::message_too_large));
  std::string text;
  ASSERT_FALSE(channel.try_receive(text));
  EXPECT_EQ(text, "a longer message");
}

TEST(Channel, EmptyTryReceiveWouldBlockAndTimedReceiveTimesOut) {
  SharedRegion region(small_config());
  Endpoint channel = Endpoint::open(region.bytes()).value();
  std::array<std::byte, 16> buffer{};
  EXPECT_EQ(channel.try_receive(buffer).error(), code(errc::would_block));
  EXPECT_EQ(channel.receive_until(buffer, sync::Clock::now() - 1s).error(), code(errc::timed_out));
  const auto start = sync::Clock::now();
  EXPECT_EQ(channel.receive_for(buffer, 20ms).error(), code(errc::timed_out));
  EXPECT_GE(sync::Clock::now() - start, 20ms);
  EXPECT_EQ(channel.try_peek().error(), code(errc::would_block));
  EXPECT_EQ(channel.peek_until(sync::Clock::now() + 1ms).error(), code(errc::timed_out));
}

TEST(Channel, FullTrySendWouldBlockAndTimedSendTimesOutNothingIsOverwritten) {
  SharedRegion region(small_config(1024, 100));
  Endpoint channel = Endpoint::open(region.bytes()).value();
  std::vector<std::byte> message(100);
  int sent = 0;
  for (;; ++sent) {
    message[0] = static_cast<std::byte>(sent);
    std::error_code error = channel.try_send(message);
    if (error) {
      EXPECT_EQ(error, code(errc::would_block));
      break;
    }
  }
  EXPECT_EQ(sent, 7);  // 7 records of 128 bytes + a 16-byte free marker fit in 1024
  EXPECT_EQ(channel.send_until(message, sync::Clock::now()), code(errc::timed_out));
  EXPECT_EQ(channel.send_for(message, 10ms), code(errc::timed_out));
  std::vector<std::byte> out;
  for (int i = 0; i < sent; ++i) {
    ASSERT_FALSE(channel.try_receive(out));
    EXPECT_EQ(out[0], static_cast<std::byte>(i));
  }
  EXPECT_EQ(channel.try_receive(out), code(errc::would_block));
}

TEST(Channel, ReserveCommitWritesInPlaceAndAnAbandonedReservationIsSkipped) {
  SharedRegion region(small_config());
  Endpoint channel = Endpoint::open(region.bytes()).value();
  {
    Reservation dropped = channel.try_reserve(10).value();
    std::memset(dropped.data().data(), 'x', 10);
  }  // abandoned
  Reservation reservation = channel.reserve(3).value();
  std::memcpy(reservation.data().data(), "abc", 3);
  ASSERT_FALSE(channel.commit(reservation));
  EXPECT_EQ(channel.commit(reservation), code(errc::invalid_argument));
  std::string text;
  ASSERT_FALSE(channel.try_receive(text));
  EXPECT_EQ(text, "abc");
  EXPECT_EQ(channel.try_receive(text), code(errc::would_block));
  Statistics stats = channel.statistics();
  EXPECT_EQ(stats.abandoned, 1u);
  EXPECT_EQ(stats.reserved_total, 2u);
  EXPECT_EQ(stats.claimed_total, 1u);
  EXPECT_EQ(stats.depth_messages, 0u);
}

TEST(Channel, PeekReadsInPlaceAndReleaseFreesTheSpace) {
  SharedRegion region(small_config(1024, 200));
  Endpoint channel = Endpoint::open(region.bytes()).value();
  ASSERT_FALSE(channel.send(as_bytes("first")));
  ASSERT_FALSE(channel.send(as_bytes("second")));
  Message first = channel.try_peek().value();
  Message second = channel.peek().value();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(first.data().data()), first.data().size()),
            "first");
  EXPECT_EQ(second.data().size(), 6u);
  EXPECT_EQ(channel.statistics().claimed_bytes, 64u);
  ASSERT_FALSE(channel.release(second));  // out of order: reclaimed with the first
  EXPECT_EQ(channel.statistics().claimed_bytes, 64u);
  EXPECT_EQ(channel.release(second), code(errc::invalid_argument));
  ASSERT_FALSE(channel.release(first));
  EXPECT_FALSE(channel.recover());  // releases reclaim lazily; recover() reclaims now
  EXPECT_EQ(channel.statistics().claimed_bytes, 0u);
  ASSERT_FALSE(channel.send(as_bytes("third")));
  {
    Message third = channel.peek().value();
    EXPECT_EQ(channel.statistics().claimed_bytes, 32u);
  }  // the destructor releases
  EXPECT_FALSE(channel.recover());
  EXPECT_EQ(channel.statistics().claimed_bytes, 0u);
}

// Sizes that pad the ring's end in every way, over positions that cross 2^32 and 2^64.
void stream_across(std::uint64_t start) {
  ChannelConfig config = small_config(1024, 200);
  config.start_position = start;
  SharedRegion region(config);
  Endpoint channel = Endpoint::open(region.bytes()).value();
  std::vector<std::byte> out;
  std::uint32_t sent = 0;
  std::uint32_t received = 0;
  for (int round = 0; round < 400; ++round) {
    const int burst = 1 + round % 5;
    for (int i = 0; i < burst; ++i) {
      std::vector<std::byte> message =
          test::make_message(1, sent, test::message_size(1, sent, config.max_message));
      std::error_code error = channel.try_send(message);
      if (error) {
        ASSERT_EQ(error, code(errc::would_block));
        break;
      }
      ++sent;
    }
    while (!channel.try_receive(out)) {
      test::Decoded d = test::check_message(out);
      ASSERT_TRUE(d.ok);
      ASSERT_EQ(d.sequence, received);
      ++received;
    }
  }
  EXPECT_EQ(sent, received);
  EXPECT_GT(sent, 400u);
  const std::uint64_t moved = channel.statistics().reserved_total;
  EXPECT_EQ(moved, sent);
}

TEST(Channel, PositionsCrossing2To32KeepEveryMessageInOrder) {
  stream_across((std::uint64_t{1} << 32) - 4096);
}

TEST(Channel, PositionsCrossing2To64KeepEveryMessageInOrder) {
  stream_across(~std::uint64_t{0} - 4095);
}

TEST(Channel, ACorruptRecordLengthIsACorruptSegmentNotAnOutOfBoundsRead) {
  SharedRegion region(small_config(1024, 200));
  Endpoint channel = Endpoint::open(region.bytes()).value();
  ASSERT_FALSE(channel.send(as_bytes("message")));
  std::byte* data = region.bytes().data() + detail::kDataOffset;
  std::uint32_t size = 100000;
  std::memcpy(data + 8, &size, 4);  // the first record's size field
  std::vector<std::byte> out;
  EXPECT_EQ(channel.try_receive(out), code(errc::corrupt_segment));
  std::uint64_t control = 0x0700000000000001;  // impossible state
  std::memcpy(data, &control, 8);
  EXPECT_EQ(channel.try_receive(out), code(errc::corrupt_segment));
}

// A peer is untrusted: random bytes written over the ring and the positions (not the lock words
// or event counts, whose corruption can only stall, never fault) give values or named errors,
// never an out-of-bounds access (this test runs under ASan in the sanitizer build).
TEST(Channel, RandomlyCorruptedRingAndPositionsGiveNamedErrorsNeverAFault) {
  std::mt19937_64 random(42);
  test::Registry registry;
  sync::Participant me = registry.attach().value();
  const long trials = xproc::test::scaled(300);
  long corrupt_seen = 0;
  for (long trial = 0; trial < trials; ++trial) {
    SharedRegion region(small_config(1024, 200));
    Endpoint channel = Endpoint::open(region.bytes(), &me).value();
    for (std::uint32_t i = 0; i < 6; ++i) {
      (void)channel.try_send(test::make_message(0, i, test::message_size(0, i, 200)));
    }
    std::vector<std::byte> out;
    (void)channel.try_receive(out);
    auto* header = reinterpret_cast<detail::ChannelHeader*>(region.bytes().data());
    std::byte* ring = region.bytes().data() + detail::kDataOffset;
    const int damage = 1 + static_cast<int>(random() % 6);
    for (int d = 0; d < damage; ++d) {
      switch (random() % 5) {
        case 0:
          header->producer.tail.store(random() % 2 == 0 ? random() : random() % 2048);
          break;
        case 1:
          header->consumer.head.store(random() % 2 == 0 ? random() : random() % 2048);
          break;
        case 2:
          header->reclaim.reclaim.store(random() % 2048);
          break;
        default: {
          const std::uint64_t value = random();
          std::memcpy(ring + (random() % (1024 - 8)), &value, 8);
        }
      }
    }
    const auto named = [](std::error_code error) {
      return !error || error == code(errc::would_block) || error == code(errc::corrupt_segment) ||
             error == code(errc::message_too_large);
    };
    for (int op = 0; op < 8; ++op) {
      std::error_code error = channel.try_send(std::vector<std::byte>(random() % 200));
      EXPECT_TRUE(named(error)) << error.message();
      error = channel.try_receive(out);
      EXPECT_TRUE(named(error)) << error.message();
      if (error == code(errc::corrupt_segment)) ++corrupt_seen;
      Result<Message> message = channel.try_peek();
      EXPECT_TRUE(named(message.error()));
      if (message) {
        EXPECT_LE(message->data().size(), 200u);
        EXPECT_FALSE(channel.release(*message));
      }
      Result<Reservation> reservation = channel.try_reserve(random() % 200);
      EXPECT_TRUE(named(reservation.error()));
      if (reservation) {
        EXPECT_FALSE(channel.commit(*reservation));
      }
      EXPECT_TRUE(named(channel.recover()));
      (void)channel.statistics();
    }
  }
  EXPECT_GT(corrupt_seen, 0);
}

TEST(Channel, BatchSendStopsWhenFullAndBatchReceiveTakesWhatIsReady) {
  SharedRegion region(small_config(1024, 100));
  Endpoint channel = Endpoint::open(region.bytes()).value();
  std::vector<std::byte> message(100, std::byte{1});
  std::vector<std::span<const std::byte>> batch(10, std::span<const std::byte>(message));
  EXPECT_EQ(channel.try_send_batch(batch).value(), 7u);
  EXPECT_EQ(channel.try_send_batch(batch).error(), code(errc::would_block));
  std::vector<std::vector<std::byte>> out(5);
  EXPECT_EQ(channel.try_receive_batch(out).value(), 5u);
  EXPECT_EQ(channel.try_receive_batch(out).value(), 2u);
  EXPECT_EQ(channel.try_receive_batch(out).error(), code(errc::would_block));
}

TEST(Channel, BatchesLongerThanOneLockChunkKeepOrderAndContent) {
  SharedRegion region(small_config(1u << 16, 64));
  Endpoint channel = Endpoint::open(region.bytes()).value();
  constexpr std::uint32_t kMessages = 300;  // several chunks of 64, and a partial one
  std::vector<std::vector<std::byte>> messages;
  for (std::uint32_t s = 0; s < kMessages; ++s) {
    messages.push_back(test::make_message(0, s, test::message_size(0, s, 64)));
  }
  std::vector<std::span<const std::byte>> batch(messages.begin(), messages.end());
  const std::size_t sent = channel.try_send_batch(batch).value();
  ASSERT_GT(sent, 64u);  // the ring holds more than a chunk
  std::vector<std::vector<std::byte>> out(kMessages);
  ASSERT_EQ(channel.try_receive_batch(out).value(), sent);
  for (std::size_t s = 0; s < sent; ++s) {
    const test::Decoded d = test::check_message(out[s]);
    ASSERT_TRUE(d.ok) << s;
    EXPECT_EQ(d.sequence, s);
  }
  EXPECT_EQ(channel.try_receive_batch(out).error(), code(errc::would_block));
  EXPECT_EQ(channel.statistics().depth_messages, 0u);
}

TEST(Channel, BatchSendStopsAtATooLargeMessageAndSendsTheOnesBefore) {
  SharedRegion region(small_config(4096, 100));
  Endpoint channel = Endpoint::open(region.bytes()).value();
  const std::vector<std::byte> fits(100, std::byte{2});
  const std::vector<std::byte> too_large(101, std::byte{3});
  const std::vector<std::span<const std::byte>> batch = {fits, fits, too_large, fits};
  EXPECT_EQ(channel.try_send_batch(batch).value(), 2u);
  const std::vector<std::span<const std::byte>> starts_large = {too_large, fits};
  EXPECT_EQ(channel.try_send_batch(starts_large).error(), code(errc::message_too_large));
  EXPECT_EQ(channel.statistics().depth_messages, 2u);
  EXPECT_EQ(channel.statistics().abandoned, 0u);  // refused before any reservation
}

void blocked_peers_wake(const WaitPolicy& policy) {
  SharedRegion region(small_config(1024, 100));
  Endpoint channel = Endpoint::open(region.bytes()).value();
  channel.set_wait_policy(policy);
  EXPECT_EQ(channel.wait_policy().spin_rounds, policy.spin_rounds);
  std::atomic<bool> got{false};
  std::thread receiver([&] {
    std::string text;
    EXPECT_FALSE(channel.receive_until(text, sync::Clock::now() + 10s));
    EXPECT_EQ(text, "wake");
    got = true;
  });
  ASSERT_TRUE(xproc::test::eventually([&] { return channel.statistics().receivers_waiting == 1; }));
  ASSERT_FALSE(channel.send(as_bytes("wake")));
  receiver.join();
  EXPECT_TRUE(got);

  std::vector<std::byte> message(100);
  while (!channel.try_send(message)) {
  }
  std::thread sender([&] { EXPECT_FALSE(channel.send_for(message, 10s)); });
  ASSERT_TRUE(xproc::test::eventually([&] { return channel.statistics().senders_waiting == 1; }));
  std::vector<std::byte> out;
  ASSERT_FALSE(channel.try_receive(out));
  sender.join();
}

TEST(Channel, BlockedReceiverWakesOnSendAndBlockedSenderWakesOnReceive) {
  blocked_peers_wake(WaitPolicy{});
}

TEST(Channel, EndpointsThatParkAtOnceAreWokenToo) {
  blocked_peers_wake(WaitPolicy{0, 0});
}

void stress(const ChannelConfig& config, std::uint32_t producers, std::uint32_t consumers,
            const WaitPolicy& policy = {}) {
  SharedRegion region(config);
  Endpoint channel = Endpoint::open(region.bytes()).value();
  channel.set_wait_policy(policy);
  const auto per_producer = static_cast<std::uint32_t>(xproc::test::scaled(20000));
  std::vector<std::vector<std::uint32_t>> next(consumers, std::vector<std::uint32_t>(producers, 0));
  std::vector<std::uint64_t> counts(consumers, 0);
  std::atomic<std::uint64_t> total{0};
  std::atomic<int> bad{0};
  std::vector<std::atomic<std::uint8_t>> seen(std::size_t{per_producer} * producers);
  const std::uint64_t expected = std::uint64_t{per_producer} * producers;
  std::vector<std::thread> threads;
  for (std::uint32_t p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      for (std::uint32_t s = 0; s < per_producer; ++s) {
        std::vector<std::byte> m = test::make_message(p, s, test::message_size(p, s, 120));
        if (channel.send_for(m, 20s)) ++bad;
      }
    });
  }
  for (std::uint32_t c = 0; c < consumers; ++c) {
    threads.emplace_back([&, c] {
      std::vector<std::byte> out;
      while (total.load() < expected) {
        std::error_code error = channel.receive_until(out, sync::Clock::now() + 20ms);
        if (error == code(errc::timed_out)) continue;
        if (error) {
          ++bad;
          return;
        }
        test::Decoded d = test::check_message(out);
        // FIFO per producer as seen by each consumer: sequences only grow.
        if (!d.ok || d.producer >= producers || d.sequence < next[c][d.producer]) {
          ++bad;
          continue;
        }
        if (d.sequence >= per_producer ||
            seen[std::size_t{d.producer} * per_producer + d.sequence].exchange(1) != 0) {
          ++bad;  // duplicate
          continue;
        }
        next[c][d.producer] = d.sequence + 1;
        ++counts[c];
        ++total;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(total.load(), expected);
  Statistics stats = channel.statistics();
  EXPECT_EQ(stats.reserved_total, expected);
  EXPECT_EQ(stats.claimed_total, expected);
  EXPECT_EQ(stats.depth_bytes, 0u);
}

TEST(ChannelStress, ThreeProducersTwoConsumersDeliverEachMessageOnceInProducerOrder) {
  stress(small_config(4096, 128), 3, 2);
}

TEST(ChannelStress, EveryWaitParkingAtOnceStillDeliversEachMessageOnce) {
  stress(small_config(2048, 128), 2, 2, WaitPolicy{0, 0});  // every wait a futex park
}

TEST(ChannelStress, SpscDeliversEveryMessageInOrder) {
  ChannelConfig config = small_config(2048, 128);
  config.spsc = true;
  stress(config, 1, 1);
}

}  // namespace
}  // namespace xproc::channel
