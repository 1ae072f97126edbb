// bulk::BulkChannel within one process (threads): every size byte-exact by every path, the
// path choice and its report, post() completions, a receive buffer that is too small (the
// payload is kept), forged records, a refused pull that falls back to the pool, several
// producer and consumer threads (each payload exactly once, per producer in order), and paced
// streams (a slow consumer, try_send unpaced, send_until timing out: the stream is aborted).

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "bulk_channel_test_support.h"
#include "child_process.h"
#include "transfer_test_support.h"
#include "xproc/bulk/bulk_channel.h"
#include "xproc/bulk/transfer.h"
#include "xproc/bulk/transfer_layout.h"
#include "xproc/sys/error.h"

namespace xproc::bulk {
namespace {

using namespace std::chrono_literals;
using test::check_payload;
using test::config_for;
using test::make_payload;

constexpr std::uint64_t kMiB = 1u << 20;

BulkChannel make_channel(const BulkChannelConfig& config, const BulkProcessOptions& process = {}) {
  shm::SegmentOptions options;
  options.participant_capacity = 16;
  return BulkChannel::create_anonymous(config, options, process).value();
}

TEST(BulkChannel, DefaultConfigUsesInlineAndPoolAndSaysWhyPullIsOff) {
  BulkChannel channel = make_channel(BulkChannelConfig{});
  EXPECT_EQ(channel.path_for(0), BulkPath::inline_record);
  EXPECT_EQ(channel.path_for(4096), BulkPath::inline_record);
  EXPECT_EQ(channel.path_for(4097), BulkPath::pool_copy);
  EXPECT_EQ(channel.path_for(64 * kMiB), BulkPath::pool_copy);
  const PathReport report = channel.path_report();
  EXPECT_FALSE(report.pull_enabled);
  EXPECT_NE(report.pull_reason.find("pull_min is never"), std::string::npos);
  EXPECT_NE(report.to_string().find("using pool_copy"), std::string::npos) << report.to_string();
  EXPECT_EQ(channel.send(std::vector<std::byte>(64 * kMiB + 1)), errc::message_too_large);
}

TEST(BulkChannel, PullThresholdOptionsAndDisableAreReported) {
  BulkChannel channel = make_channel(config_for(4 * kMiB, kMiB));
  EXPECT_EQ(channel.path_for(kMiB - 1), BulkPath::pool_copy);
  EXPECT_EQ(channel.path_for(kMiB), BulkPath::pull);
  EXPECT_TRUE(channel.path_report().pull_enabled) << channel.path_report().pull_reason;
  channel.disable_pull("the test says so");
  EXPECT_EQ(channel.path_for(kMiB), BulkPath::pool_copy);
  EXPECT_EQ(channel.path_report().pull_reason, "the test says so");

  BulkProcessOptions no_pull;
  no_pull.allow_pull = false;
  BulkChannel refused = make_channel(config_for(4 * kMiB, kMiB), no_pull);
  EXPECT_EQ(refused.path_for(2 * kMiB), BulkPath::pool_copy);
  EXPECT_NE(refused.path_report().pull_reason.find("options"), std::string::npos);

  BulkChannelConfig bad = config_for(4 * kMiB, 0);
  shm::SegmentOptions options;
  EXPECT_EQ(BulkChannel::create_anonymous(bad, options).error(), errc::invalid_argument);
}

// One producer thread sends every size; the test thread receives and checks each, in order.
void round_trip(const BulkChannelConfig& config, const std::vector<std::size_t>& sizes,
                std::vector<BulkPath> expected_paths) {
  BulkChannel channel = make_channel(config);
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(channel.path_for(sizes[i]), expected_paths[i]) << sizes[i];
  }
  std::atomic<int> failures{0};
  std::thread producer([&] {
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const std::vector<std::byte> payload =
          make_payload(sizes[i], 1, static_cast<std::uint32_t>(i));
      if (channel.send(payload)) failures.fetch_add(1);
    }
  });
  std::vector<std::byte> out;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 60s));
    ASSERT_EQ(out.size(), sizes[i]);
    const auto id = check_payload(out);
    ASSERT_TRUE(id.has_value()) << "torn payload of " << sizes[i] << " bytes";
    if (sizes[i] >= 16) {
      EXPECT_EQ(id->sequence, i);
    }
  }
  producer.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(BulkChannel, EverySizeArrivesByteExactThroughInlineAndPool) {
  const std::vector<std::size_t> sizes = {
      0, 1, 4095, 4096, 4097, 64 << 10, kMiB, 16 * kMiB, 64 * kMiB + 4096};
  std::vector<BulkPath> paths;
  for (std::size_t size : sizes) {
    paths.push_back(size <= 4096 ? BulkPath::inline_record : BulkPath::pool_copy);
  }
  round_trip(config_for(64 * kMiB + 4096, kPullNever, 2), sizes, paths);
}

TEST(BulkChannel, EverySizeArrivesByteExactWithPullAboveOneMiB) {
  const std::vector<std::size_t> sizes = {
      0, 1, 4095, 64 << 10, kMiB - 1, kMiB, 3 * kMiB + 5, 16 * kMiB, 64 * kMiB + 4096};
  std::vector<BulkPath> paths;
  for (std::size_t size : sizes) {
    paths.push_back(size <= 4096  ? BulkPath::inline_record
                    : size < kMiB ? BulkPath::pool_copy
                                  : BulkPath::pull);
  }
  round_trip(config_for(64 * kMiB + 4096, kMiB, 2), sizes, paths);
}

TEST(BulkChannel, PostedPullsCompleteWhenConsumed) {
  BulkChannel channel = make_channel(config_for(4 * kMiB, kMiB));
  std::vector<std::vector<std::byte>> payloads;
  std::vector<Completion> completions;
  for (std::uint32_t i = 0; i < 6; ++i) {
    payloads.push_back(make_payload(kMiB + i * 4096, 2, i));
    Result<Completion> completion = channel.post(payloads.back());
    ASSERT_TRUE(completion) << completion.error().message();
    EXPECT_EQ(completion->path(), BulkPath::pull);
    EXPECT_EQ(completion->poll(), errc::would_block);
    completions.push_back(std::move(*completion));
  }
  std::thread consumer([&] {
    std::vector<std::byte> out;
    for (std::uint32_t i = 0; i < 6; ++i) {
      ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 30s));
      const auto id = check_payload(out);
      ASSERT_TRUE(id.has_value());
      EXPECT_EQ(id->sequence, i);
    }
  });
  for (Completion& completion : completions) EXPECT_FALSE(completion.wait_for(30s));
  consumer.join();
  EXPECT_EQ(channel.path_report().sent_pull, 6u);
  // Inline and pool payloads are done at once.
  const std::vector<std::byte> small = make_payload(100, 2, 6);
  Result<Completion> done = channel.post(small);
  ASSERT_TRUE(done);
  EXPECT_TRUE(done->done());
  EXPECT_EQ(done->path(), BulkPath::inline_record);
}

TEST(BulkChannel, TooSmallBufferKeepsThePayloadForTheNextReceive) {
  BulkChannel channel = make_channel(config_for(4 * kMiB, kMiB));
  const std::vector<std::byte> small = make_payload(100, 3, 0);
  const std::vector<std::byte> medium = make_payload(10000, 3, 1);
  const std::vector<std::byte> large = make_payload(2 * kMiB, 3, 2);
  ASSERT_FALSE(channel.send(small));
  ASSERT_FALSE(channel.send(medium));
  std::thread producer([&] { EXPECT_FALSE(channel.send(large)); });  // pulled: waits for us
  std::vector<std::byte> tiny(50);
  std::size_t needed = 0;
  const sync::Deadline deadline = sync::Clock::now() + 30s;
  for (const std::vector<std::byte>* expected : {&small, &medium, &large}) {
    Result<std::size_t> refused = channel.receive_sized(tiny, &deadline, &needed);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error(), errc::message_too_large);
    EXPECT_EQ(needed, expected->size());
    // Again: the same payload is still there.
    EXPECT_EQ(channel.try_receive(std::span<std::byte>(tiny)).error(), errc::message_too_large);
    std::vector<std::byte> out(expected->size());
    Result<std::size_t> received = channel.receive_until(std::span<std::byte>(out), deadline);
    ASSERT_TRUE(received) << received.error().message();
    EXPECT_EQ(*received, expected->size());
    EXPECT_EQ(out, *expected);
  }
  producer.join();
  EXPECT_EQ(channel.try_receive(std::span<std::byte>(tiny)).error(), errc::would_block);
}

// Raw records sent through the channel underneath: [kind u32][0 u32][length u64] + body.
std::error_code send_raw(const BulkChannel& channel, std::uint32_t kind, std::uint64_t length,
                         std::span<const std::byte> body, std::uint32_t reserved = 0) {
  std::array<std::byte, 16> header{};
  std::memcpy(header.data(), &kind, 4);
  std::memcpy(header.data() + 4, &reserved, 4);
  std::memcpy(header.data() + 8, &length, 8);
  std::vector<std::byte> record(header.begin(), header.end());
  record.insert(record.end(), body.begin(), body.end());
  return channel.endpoint().send(record);
}

TEST(BulkChannel, ForgedRecordsAreRefusedWithBadDescriptor) {
  BulkChannel channel = make_channel(config_for(4 * kMiB, kMiB));
  const std::vector<std::byte> body32(32, std::byte{0x5a});
  const std::vector<std::byte> inline_body(10, std::byte{1});
  ASSERT_FALSE(send_raw(channel, 9, 10, inline_body));               // unknown kind
  ASSERT_FALSE(send_raw(channel, 1, 11, inline_body));               // length != body
  ASSERT_FALSE(send_raw(channel, 1, 10, inline_body, 7));            // reserved != 0
  ASSERT_FALSE(send_raw(channel, 2, 10000, body32));                 // garbage pool descriptor
  ASSERT_FALSE(send_raw(channel, 3, 2 * kMiB, body32));              // length != descriptor's
  ASSERT_FALSE(send_raw(channel, 2, 100 * kMiB, body32));            // above max_payload
  ASSERT_FALSE(channel.endpoint().send(std::vector<std::byte>(3)));  // shorter than a header
  std::vector<std::byte> forged_pull(32);
  const std::uint64_t length = 2 * kMiB;
  const std::uint32_t tag = 0x12345678;  // not the table's tag (a 1-in-2^32 collision aside)
  std::memcpy(forged_pull.data(), &tag, 4);
  std::memcpy(forged_pull.data() + 16, &length, 8);
  ASSERT_FALSE(send_raw(channel, 3, length, forged_pull));
  // Streams (kind 4) naming no stream buffer: a class out of range, an offset inside a buffer,
  // a chunk below 4096, an impossible producer id.
  struct Stream {
    std::uint32_t size_class;
    std::uint32_t chunk;
    std::uint64_t offset;
    std::uint32_t producer;
    std::uint32_t reserved;
    std::uint64_t reserved2;
  };
  const Stream streams[] = {{99, 1u << 18, 0, 1, 0, 0},
                            {0, 1u << 18, 12345, 1, 0, 0},
                            {0, 100, 0, 1, 0, 0},
                            {0, 1u << 18, 0, 0, 0, 0}};
  for (const Stream& stream : streams) {
    std::vector<std::byte> stream_body(32);
    std::memcpy(stream_body.data(), &stream, sizeof stream);
    ASSERT_FALSE(send_raw(channel, 4, 10000, stream_body));
  }
  std::vector<std::byte> out;
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(channel.try_receive(out), errc::bad_descriptor) << "record " << i;
  }
  const std::vector<std::byte> good = make_payload(20000, 4, 0);
  ASSERT_FALSE(channel.send(good));
  ASSERT_FALSE(channel.try_receive(out));
  EXPECT_EQ(out, good);
  EXPECT_EQ(channel.statistics().pool_free, channel.statistics().pool_buffers);
}

TEST(BulkChannel, RefusedPullIsResentThroughThePoolAndTurnsPullOff) {
  BulkChannel channel = make_channel(config_for(4 * kMiB, kMiB));
  const std::vector<std::byte> payload = make_payload(2 * kMiB, 5, 0);
  Result<Completion> completion = channel.post(payload);
  ASSERT_TRUE(completion);
  ASSERT_EQ(completion->path(), BulkPath::pull);
  // A consumer whose process_vm_readv is refused: take the record, fail the transfer with
  // permission_denied as TransferEndpoint::pull does (this process may always read itself).
  {
    Result<channel::Message> message = channel.endpoint().try_peek();
    ASSERT_TRUE(message);
    ASSERT_EQ(message->data().size(), 48u);
    TransferDescriptor descriptor;
    std::memcpy(&descriptor, message->data().data() + 16, sizeof descriptor);
    detail::TransferSlot& slot = test::slot_of(channel.segment(), descriptor.slot);
    std::uint64_t word = slot.state.load();
    ASSERT_EQ(detail::state_of(word), detail::SlotState::open);
    ASSERT_TRUE(slot.state.compare_exchange_strong(
        word, detail::make_state(descriptor.generation, detail::SlotState::failed,
                                 static_cast<std::uint32_t>(errc::permission_denied))));
    slot.done.notify_all();
    ASSERT_FALSE(channel.endpoint().release(*message));
  }
  EXPECT_FALSE(completion->wait_for(10s));  // re-sent through the pool
  EXPECT_EQ(completion->path(), BulkPath::pool_copy);
  const PathReport report = channel.path_report();
  EXPECT_FALSE(report.pull_enabled);
  EXPECT_NE(report.pull_reason.find("refused"), std::string::npos) << report.pull_reason;
  EXPECT_EQ(report.pull_fallbacks, 1u);
  EXPECT_EQ(channel.path_for(2 * kMiB), BulkPath::pool_copy);
  std::vector<std::byte> out;
  ASSERT_FALSE(channel.try_receive(out));
  EXPECT_EQ(out, payload);
}

TEST(BulkChannel, ProducersAndConsumerThreadsDeliverEachPayloadOnceInOrder) {
  constexpr std::uint32_t kProducers = 3;
  constexpr int kConsumers = 2;
  const auto per_producer = static_cast<std::uint32_t>(xproc::test::scaled(60));
  BulkChannel channel = make_channel(config_for(4 * kMiB, kMiB, 4));
  const std::size_t sizes[] = {0, 17, 4096, 5000, 70000, kMiB, 2 * kMiB + 3, 300, 4 * kMiB};
  std::mutex mutex;
  std::map<std::pair<std::uint32_t, std::uint32_t>, int> seen;  // guarded by mutex
  std::atomic<int> bad{0};
  std::atomic<std::uint32_t> received{0};
  const std::uint32_t total = kProducers * per_producer;
  std::vector<std::thread> threads;
  for (std::uint32_t p = 1; p <= kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (std::uint32_t i = 0; i < per_producer; ++i) {
        // Sizes below 16 carry no identity: keep every payload identifiable.
        const std::size_t size = std::max<std::size_t>(16, sizes[(i + p) % std::size(sizes)]);
        if (channel.send(make_payload(size, p, i))) bad.fetch_add(1);
      }
    });
  }
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&] {
      std::vector<std::byte> out;
      std::map<std::uint32_t, std::uint32_t> last;  // per producer: order within this consumer
      while (received.load() < total) {
        std::error_code error = channel.receive_until(out, sync::Clock::now() + 100ms);
        if (error == errc::timed_out) continue;
        if (error) {
          bad.fetch_add(1);
          return;
        }
        received.fetch_add(1);
        const auto id = check_payload(out);
        if (!id) {
          bad.fetch_add(1);
          continue;
        }
        if (last.count(id->producer) != 0 && last[id->producer] >= id->sequence) bad.fetch_add(1);
        last[id->producer] = id->sequence;
        std::lock_guard<std::mutex> lock(mutex);
        ++seen[{id->producer, id->sequence}];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(seen.size(), total);
  for (const auto& [id, count] : seen) EXPECT_EQ(count, 1);
  const PathReport report = channel.path_report();
  EXPECT_GT(report.sent_inline, 0u);
  EXPECT_GT(report.sent_pool, 0u);
  EXPECT_GT(report.sent_pull, 0u);
  const BulkChannelStatistics stats = channel.statistics();
  EXPECT_EQ(stats.pool_free, stats.pool_buffers);
}

// Streams paced by a window of 4 chunks of 64 KiB (an 8 MiB payload is 128 chunks).
BulkProcessOptions paced_options() {
  BulkProcessOptions process;
  process.stream_chunk = 64 << 10;
  process.stream_window = 4;
  return process;
}

TEST(BulkChannel, PacedProducerWaitsForASlowConsumerAndEveryPayloadArrivesByteExact) {
  BulkChannel channel = make_channel(config_for(16 * kMiB, kPullNever, 2), paced_options());
  constexpr std::uint32_t kPayloads = 3;
  std::atomic<bool> sent{false};
  std::atomic<int> failures{0};
  std::thread producer([&] {
    for (std::uint32_t i = 0; i < kPayloads; ++i) {
      if (channel.send(make_payload(8 * kMiB, 1, i))) failures.fetch_add(1);
    }
    sent.store(true);
  });
  // Nobody reads yet: the producer cannot get more than 4 chunks into the first payload, so it
  // has not returned whatever the scheduling (no timing is asserted, only that it waits).
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(sent.load());
  std::vector<std::byte> out;
  for (std::uint32_t i = 0; i < kPayloads; ++i) {
    std::this_thread::sleep_for(5ms);  // a slow consumer: the producer waits at the window
    ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 60s));
    ASSERT_EQ(out.size(), 8 * kMiB);
    const auto id = check_payload(out);
    ASSERT_TRUE(id.has_value()) << "torn payload " << i;
    EXPECT_EQ(id->sequence, i);
  }
  producer.join();
  EXPECT_TRUE(sent.load());
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(channel.try_receive(out), errc::would_block);
  const BulkChannelStatistics stats = channel.statistics();
  EXPECT_EQ(stats.pool_free, stats.pool_buffers);
}

TEST(BulkChannel, TrySendOfAStreamNobodyReadsGoesOnUnpaced) {
  // try_send never parks: past its spin it streams the rest without pacing, and the payload is
  // queued like any other.
  BulkChannel channel = make_channel(config_for(16 * kMiB, kPullNever, 2), paced_options());
  const std::vector<std::byte> payload = make_payload(8 * kMiB, 1, 7);
  ASSERT_FALSE(channel.try_send(payload));
  std::vector<std::byte> out;
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 60s));
  EXPECT_EQ(out, payload);
  const BulkChannelStatistics stats = channel.statistics();
  EXPECT_EQ(stats.pool_free, stats.pool_buffers);
}

TEST(BulkChannel, SendUntilTimesOutWhileNobodyReadsAndTheStreamIsNeverDelivered) {
  BulkChannel channel = make_channel(config_for(16 * kMiB, kPullNever, 2), paced_options());
  const std::vector<std::byte> lost = make_payload(8 * kMiB, 1, 0);
  EXPECT_EQ(channel.send_for(lost, 30ms), errc::timed_out);
  // The aborted stream's buffer is back in the pool at once; its record is still queued.
  BulkChannelStatistics stats = channel.statistics();
  EXPECT_EQ(stats.pool_free, stats.pool_buffers);
  EXPECT_EQ(stats.channel.depth_messages, 1u);
  // A consumer skips the aborted stream: nothing torn, nothing delivered.
  std::vector<std::byte> out;
  EXPECT_EQ(channel.try_receive(out), errc::would_block);
  // The channel goes on: the next payload (the same buffer, a new stream) arrives whole.
  const std::vector<std::byte> next = make_payload(8 * kMiB, 1, 1);
  std::thread producer([&] { EXPECT_FALSE(channel.send_for(next, 60s)); });
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 60s));
  EXPECT_EQ(out, next);
  producer.join();
  EXPECT_EQ(channel.try_receive(out), errc::would_block);
  stats = channel.statistics();
  EXPECT_EQ(stats.pool_free, stats.pool_buffers);
}

// Ring streams (stream_ring_min 0): every payload above 4 chunks of 4 KiB goes through a ring
// of 4 slots, so the producer overwrites slots the consumer copied a moment ago.
BulkProcessOptions ring_options() {
  BulkProcessOptions process;
  process.stream_chunk = 4096;
  process.stream_window = 4;
  process.stream_ring_min = 0;
  return process;
}

TEST(BulkChannel, RingStreamsFromTwoProducerThreadsArriveByteExactOnceAndInOrder) {
  BulkChannel channel = make_channel(config_for(kMiB, kPullNever, 2), ring_options());
  constexpr std::uint32_t kProducers = 2;
  constexpr std::uint32_t kPayloads = 40;
  // 5 chunks (+1 byte) to 1 MiB: just past the window, a ragged last chunk, many laps.
  auto size_of = [](std::uint32_t i) -> std::size_t {
    return i % 3 == 0 ? 4 * 4096 + 1 : i % 3 == 1 ? 100000 + 7 * i : kMiB;
  };
  std::atomic<int> failures{0};
  std::vector<std::thread> producers;
  for (std::uint32_t p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (std::uint32_t i = 0; i < kPayloads; ++i) {
        if (channel.send(make_payload(size_of(i), p, i))) failures.fetch_add(1);
      }
    });
  }
  std::uint32_t next[kProducers] = {};
  std::vector<std::byte> out;
  for (std::uint32_t n = 0; n < kProducers * kPayloads; ++n) {
    ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 60s)) << "payload " << n;
    const auto id = check_payload(out);
    ASSERT_TRUE(id.has_value()) << "torn payload " << n;
    ASSERT_LT(id->producer, kProducers);
    EXPECT_EQ(id->sequence, next[id->producer]) << "producer " << id->producer;
    EXPECT_EQ(out.size(), size_of(id->sequence));
    next[id->producer] = id->sequence + 1;
  }
  for (std::thread& producer : producers) producer.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(channel.try_receive(out), errc::would_block);  // exactly once
  const PathReport report = channel.path_report();
  EXPECT_EQ(report.sent_ring, kProducers * kPayloads);
  EXPECT_EQ(report.ring_restarts, 0u);
  const BulkChannelStatistics stats = channel.statistics();
  EXPECT_EQ(stats.pool_free, stats.pool_buffers);
}

TEST(BulkChannel, RingStreamSendUntilTimesOutWhileNobodyReadsAndIsNeverDelivered) {
  BulkChannel channel = make_channel(config_for(kMiB, kPullNever, 2), ring_options());
  const std::vector<std::byte> lost = make_payload(kMiB, 1, 0);
  EXPECT_EQ(channel.send_for(lost, 30ms), errc::timed_out);
  BulkChannelStatistics stats = channel.statistics();
  EXPECT_EQ(stats.pool_free, stats.pool_buffers);
  EXPECT_EQ(stats.channel.depth_messages, 1u);
  std::vector<std::byte> out;
  EXPECT_EQ(channel.try_receive(out), errc::would_block);  // the aborted ring is skipped
  // try_send never uses a ring (it cannot wait for the consumer): the whole-buffer stream.
  const std::vector<std::byte> tried = make_payload(kMiB, 1, 1);
  ASSERT_FALSE(channel.try_send(tried));
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 60s));
  EXPECT_EQ(out, tried);
  const std::vector<std::byte> next = make_payload(kMiB, 1, 2);
  std::thread producer([&] { EXPECT_FALSE(channel.send_for(next, 60s)); });
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 60s));
  EXPECT_EQ(out, next);
  producer.join();
  EXPECT_EQ(channel.try_receive(out), errc::would_block);
  EXPECT_EQ(channel.path_report().sent_ring, 1u);
  stats = channel.statistics();
  EXPECT_EQ(stats.pool_free, stats.pool_buffers);
}

TEST(BulkChannel, OpenRefusesAPlainTransferTable) {
  shm::Segment table = test::make_segment(4, 16);
  Result<sys::FileDescriptor> fd = sys::reopen(table.fd());
  ASSERT_TRUE(fd);
  shm::SegmentOptions options;
  options.participant_capacity = 16;
  EXPECT_EQ(BulkChannel::adopt(std::move(*fd), options).error(), errc::layout_mismatch);
}

}  // namespace
}  // namespace xproc::bulk
